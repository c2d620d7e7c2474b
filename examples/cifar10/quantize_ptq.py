"""Post-training quantisation for DIANA: calibrate -> map_scales -> pow2 -> map_to_hw -> integer -> export, with no
retraining (the config's epochs are ignored; its analog policy, descriptors and calibration batches apply).

    python examples/cifar10/quantize_ptq.py --checkpoint checkpoints/resnet20_float.pt \
        --data-path data/cifar-10-batches-py

Writes a checkpoint after every stage and the DIANA folder ``<out>/<name>_diana/``.
"""

from __future__ import annotations

from quantize_qat import main

if __name__ == "__main__":
    main(retrain=False, doc=__doc__)
