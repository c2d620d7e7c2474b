"""What DIANA takes of a canonical float graph: the generic integer path's constructs, without concatenation."""

from quantlib.modules.concat import Concat
from quantlib.preflight import GENERIC, Construct

DIANA_CONSTRUCTS = GENERIC.refusing("DIANA", Construct(
    "torch.cat", "concatenation of feature maps (DORY's Diana back end has no Concat layer)",
    "sum the branches (x + y), or let one conv compute all the channels; quantlib.quantize (the generic integer "
    "ONNX path) takes torch.cat of equally scaled inputs.", (Concat,)))
