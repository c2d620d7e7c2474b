"""DIANA as a target: the recipe of docs/diana-numerics.md as a stage table, and what DIANA adds to the generic
integer path (its constructs, the scale rules and ONNX form of its analog layers, their integerisation)."""

from __future__ import annotations

from quantlib.backends.diana.analog_integerisation import (
    ANALOG_BATCHNORM_FOLDER,
    ANALOG_CONV_INTEGERISER,
    DIANA_EMITTERS,
    DIANA_SCALE_RULES,
)
from quantlib.backends.diana.constructs import DIANA_CONSTRUCTS
from quantlib.backends.diana.layer_kinds import DIANA_LAYER_KINDS
from quantlib.backends.diana.stage_editors import ClampAdcScales, CoreBitwidths, MapAnalogBatchNorms, adc_quantisers
from quantlib.calibration import Calibrate
from quantlib.editors.base import Rewriter
from quantlib.editors.fake2true import integer_editors
from quantlib.scales import FreezeScales, Pow2Scales, QuantiseBiases
from quantlib.staging import StageRow, StageTable
from quantlib.targets import Target
from quantlib.verification import FakeEqualsExact


def _adcs_need_data(dm) -> str | bool:
    return bool(dm.choice.analog) and f"the ADCs of the analog layers {dm.choice.analog} are calibrated on data"


DIANA_STAGES = StageTable("quantised", (  # from_fp_model: 8-bit digital fake-quantised, BN folded, adds quantised
    StageRow("calibrated", "calibrate",
             lambda dm, batches, progress=False: [Calibrate(batches, progress=progress)],
             requires="a fake-quantised model", ensures="every quantiser initialised from data; adds and pools tied",
             takes_data=True, needs_data=True, retrain_key="8bit", repeatable=True),
    StageRow("scales_mapped", "map_scales",
             lambda dm, batches, progress=False: [
                 CoreBitwidths(dm.choice.analog),                                  # 7-bit ReLUs, ternary weights
                 *([Calibrate(batches, adc_quantisers, progress), ClampAdcScales()] if dm.choice.analog else [])],
             requires="calibrated 8-bit scales", ensures="every layer at its core's bit-widths; ADCs calibrated",
             takes_data=True, needs_data=_adcs_need_data, retrain_key="map_scales",
             rebuild=lambda dm: [CoreBitwidths(dm.choice.analog)]),
    StageRow("pow2", "clip_scales_pow2",
             lambda dm, batches: [Pow2Scales(), ClampAdcScales(), FreezeScales(),
                                  MapAnalogBatchNorms(dm.reference(), DIANA_SCALE_RULES)],
             requires="every layer at its core's bit-widths", ensures="every scale a power of two, frozen; analog "
             "BatchNorms compute the chip's affine", retrain_key="pow2", repeatable=True,
             rebuild=lambda dm: [FreezeScales()]),
    StageRow("hw_mapped", "map_to_hw",
             lambda dm, batches: [QuantiseBiases(dm.reference(), DIANA_SCALE_RULES),
                                  *([FakeEqualsExact(dm.inputs_of(batches), dm.exact_of)] if batches else [])],
             requires="power-of-two scales", ensures="biases on their accumulators' grids: fake == integer",
             takes_data=True),
    StageRow("integer", "integrize", lambda dm, batches: integer_editors(),
             requires="a hardware-mapped model", ensures="the integer model runs", builds="integer",
             source=lambda dm: dm.exact_for_integer()),
))

DIANA = Target("DIANA", DIANA_CONSTRUCTS, DIANA_SCALE_RULES, DIANA_EMITTERS,
               layer_integerisers=lambda: [Rewriter(ANALOG_CONV_INTEGERISER)],  # ternary ADC-tiled, before digital
               finishers=lambda: [Rewriter(ANALOG_BATCHNORM_FOLDER)],           # analog BN affine into the next requant
               stages=DIANA_STAGES, layer_kinds=DIANA_LAYER_KINDS)
