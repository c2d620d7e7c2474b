import pytest
from torch import nn

from quantlib.backends.diana.descriptors import DescriptorError, load_descriptors, write_template
from quantlib.backends.diana.hardware_rules import analog_eligibility

LAYERS = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "fc"]


def test_round_trip_of_a_template(tmp_path):
    findings = analog_eligibility("fc", nn.Linear(4, 4))
    path = write_template(tmp_path / "d.yaml", {"conv1": ("analog", []), "fc": ("digital", findings)})
    text = path.read_text()
    assert "# fc: [analog-op] Linear layers run on the digital core only." in text
    assert load_descriptors(path, LAYERS) == {"conv1": "analog", "fc": "digital"}
    assert [p.name for p in tmp_path.iterdir()] == ["d.yaml"]


def test_lower_case_cores_and_empty_file(tmp_path):
    (tmp_path / "d.yaml").write_text("layer1.0.conv1: analog\n")
    assert load_descriptors(tmp_path / "d.yaml", LAYERS) == {"layer1.0.conv1": "analog"}
    (tmp_path / "e.yaml").write_text("")
    assert load_descriptors(tmp_path / "e.yaml", LAYERS) == {}


@pytest.mark.parametrize("text, message", [
    ("layer1.0.conv3: ANALOG\n", r"names layer 'layer1.0.conv3', which the model does not have. Did you mean "
                                 r"'layer1.0.conv[12]', 'layer1.0.conv[12]'\?"),
    ("conv1: FAST\n", r"layer 'conv1' has core 'FAST'; allowed: ANALOG or DIGITAL"),
    ("conv1: [ANALOG\n", r"is not valid YAML at line 2"),
    ("- conv1\n- fc\n", r"must map layer names to ANALOG or DIGITAL, got a list"),
])
def test_bad_descriptor_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "d.yaml"
    path.write_text(text)
    with pytest.raises(DescriptorError, match=message):
        load_descriptors(path, LAYERS)


def test_missing_file(tmp_path):
    with pytest.raises(DescriptorError, match=r"Cannot read descriptor file '.*nope.yaml': No such file"):
        load_descriptors(tmp_path / "nope.yaml", LAYERS)
