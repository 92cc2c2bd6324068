"""EdgeOfStability(every_n_steps=50) with its defaults, attached as a user attaches it, on a small GPT-2
from a ``transformers`` config (2 layers, width 64, 32 tokens, vocabulary 256, batches of 8, AdamW):
seconds per measurement against a training step. Nothing installed at run time.

    python benchmarks/default_cost.py
"""
import time, torch, lightning.pytorch as pl, transformers, warnings
from torch.utils.data import DataLoader, TensorDataset
from lightning_dyn import EdgeOfStability
warnings.filterwarnings("ignore")
V, L = 256, 32
class GPT(pl.LightningModule):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=V, n_positions=L, n_embd=64, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0))
    def training_step(self, b, i):
        return self.model(input_ids=b[0], labels=b[0]).loss
    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)
g = torch.Generator().manual_seed(0)
data = TensorDataset((torch.randint(0, V, (2000, 1), generator=g) + torch.randint(1, 5, (2000, 1), generator=g) * torch.arange(L)) % V)
def run(cbs):
    t = pl.Trainer(max_steps=100, callbacks=cbs, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    s = time.perf_counter(); t.fit(GPT(), DataLoader(data, batch_size=8, shuffle=True)); return time.perf_counter() - s
plain = run([])
eos = EdgeOfStability(every_n_steps=50)
with_eos = run([eos])
per = [h for h in eos.history]
print(f"plain 100 steps {plain:.1f} s ({plain/100*1000:.0f} ms a step); with EoS {with_eos:.1f} s; "
      f"measurements at {[h['step'] for h in per]}, products {[h['hvps'] for h in per]}, EoS total {eos.total_seconds:.1f} s")
