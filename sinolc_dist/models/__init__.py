"""Networks (the SinoLC-1 authors' L2HNet and Paraformer), the checkpoint format and the demo model."""

from pathlib import Path

from sinolc_dist.models.checkpoint import Checkpoint, ModelSpec, load_checkpoint, save_checkpoint
from sinolc_dist.models.l2hnet import L2HNet
from sinolc_dist.models.paraformer import Paraformer

#: The small L2HNet trained on the synthetic demo generator (see sinolc_dist/demo/train.py).
DEMO_CHECKPOINT = Path(__file__).parent / "weights" / "demo_l2hnet.pt"

__all__ = ["DEMO_CHECKPOINT", "Checkpoint", "L2HNet", "ModelSpec", "Paraformer", "load_checkpoint",
           "save_checkpoint"]
