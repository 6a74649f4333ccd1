"""The one surgery primitive: apply selection vectors to channel groups.

A selection vector over a group's current channels says what the group becomes: ``[0, 2, 3]``
removes channel 1, ``[0, 1, 2, 3, 1, 3]`` duplicates channels 1 and 3, a permutation reorders.
Every member of the group follows: each parameter/buffer dimension is ``index_select``-ed
through its index map (a channel of a flattened conv output is ``H*W`` consecutive features; a
concat slot adds its offset), module attributes and graph constants are recomputed from the
new widths (``constants.py``), and shapes on the graph are updated in place, so the channel graph
stays true without re-analysis.

New copies are initialised by an initialiser from one registry (``initializers.py``):
``preserve`` (Net2WiderNet) copies producer rows and statistics and splits consumer columns
between the copies, so outputs are unchanged; the CGaP pass adds the paper's Eq. 5-10 and random.

Every edit is validated (``validate.py``: the resized module is traced again and every
intermediate shape compared with the graph's); on any failure every change is rolled back and
:class:`SurgeryError` names the problem. ``masking.py`` zeroes channels instead: the masked twin.
``partial.py`` applies what validates, group by group, and reports the groups it left alone.
"""

from cgap_graph.surgery.initializers import INITIALIZERS, make_initializer, preserve_init, register_initializer
from cgap_graph.surgery.masking import mask_channels, unit_norms
from cgap_graph.surgery.partial import apply_each, merge_reports
from cgap_graph.surgery.select import apply_selection
from cgap_graph.surgery.tensors import get_tensor, put_tensor
from cgap_graph.surgery.types import Initializer, SlotChange, SurgeryContext, SurgeryReport

__all__ = ["INITIALIZERS", "Initializer", "SlotChange", "SurgeryContext", "SurgeryReport", "apply_each",
           "apply_selection", "get_tensor", "make_initializer", "mask_channels", "merge_reports", "preserve_init",
           "put_tensor", "register_initializer", "unit_norms"]
