"""Float to fake-quantised: quantised modules in place of float ones, quantisers where integers are needed,
harmonised additions, and no quantiser twice in a row."""

from quantlib.editors.float2fake.activation_fuser import ACTIVATION_FUSER
from quantlib.editors.float2fake.add_tree_harmoniser import AddTreeHarmoniser
from quantlib.editors.float2fake.interposer import Interposer
from quantlib.editors.float2fake.module_filter import ModuleFilter
from quantlib.editors.float2fake.module_wise_converter import FLOAT_TO_QUANTISED, ModuleWiseConverter

__all__ = ["FLOAT_TO_QUANTISED", "ACTIVATION_FUSER", "AddTreeHarmoniser", "Interposer", "ModuleFilter",
           "ModuleWiseConverter"]
