"""Batches as a ``transformers`` pipeline makes them: a tokenizer, ``DataCollatorForLanguageModeling``
(a ``BatchEncoding`` — a ``Mapping``, not a ``dict`` — of ``input_ids``, ``attention_mask`` and
``labels``), and a ``training_step`` that calls ``self.model(**batch)``; also a module with no
``forward`` of its own, whose ``training_step`` calls the wrapped model. Every callback that
measures a loss takes these batches; values against a float64 reference on the same probe set."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from lightning_dyn import EdgeOfStability, GradientExplosionMonitor, HessianSettings, HessianSharpness, SGDLyapunov
from tests.journeys.common import fit, reference_top_eigenvalue, training_state
from tests.contract.harness import seed_all

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = 30


def tokenizer():
    """A word-level tokenizer made here (nothing downloaded)."""
    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i + 2 for i in range(WORDS)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def texts(n: int = 48, length: int = 8) -> list[str]:
    g = torch.Generator().manual_seed(7)
    starts, strides = torch.randint(0, WORDS, (n,), generator=g), torch.randint(1, 4, (n,), generator=g)
    return [" ".join(f"w{(int(s) + int(d) * k) % WORDS}" for k in range(length)) for s, d in zip(starts, strides)]


class LanguageModel(pl.LightningModule):
    """A GPT-2 from a config trained on collated ``BatchEncoding`` batches; no ``forward`` of its own."""

    def __init__(self) -> None:
        super().__init__()
        config = transformers.GPT2Config(vocab_size=WORDS + 2, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                                         bos_token_id=0, eos_token_id=0, pad_token_id=0)
        self.model = transformers.GPT2LMHeadModel(config)

    def training_step(self, batch, batch_idx):
        return self.model(**batch).loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def model_loss(pl_module, batch) -> torch.Tensor:
    return pl_module.model(**batch).loss


class _Reference(torch.nn.Module):
    """The same network with a ``forward`` taking the batch, so the reference can call it."""

    def __init__(self, lm: LanguageModel) -> None:
        super().__init__()
        self.model = lm.model

    def forward(self, batch):
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"]
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                               ignore_index=-100)


def test_batch_encoding_batches_are_measured():
    seed_all(0)
    tok = tokenizer()
    collate = transformers.DataCollatorForLanguageModeling(tok, mlm=False)
    assert not isinstance(collate([tok(texts()[0])]), dict)  # a Mapping, not a dict: what used to be refused

    def run(callbacks):
        seed_all(0)
        module = LanguageModel()
        loader = DataLoader([tok(t) for t in texts()], batch_size=8, shuffle=True, collate_fn=collate,
                            generator=torch.Generator().manual_seed(1))
        return fit(module, loader, callbacks, max_steps=6), module

    plain = training_state(*run([]))
    sharp = HessianSharpness(every_n_steps=3, hessian=HessianSettings(tol=1e-6, probe_size=16))
    eos = EdgeOfStability(every_n_steps=3, hessian=HessianSettings(tol=1e-6, probe_size=16))
    monitor = GradientExplosionMonitor(every_n_steps=3)
    lyapunov = SGDLyapunov(every_n_steps=6, method="hvp", probe_size=8, num_steps=20, num_lrs=1, batch_sizes=[],
                           hvp_directions=2, at_fit_end=False)
    trainer, module = run([sharp, eos, monitor, lyapunov])
    torch.testing.assert_close(training_state(trainer, module), plain, rtol=0, atol=0)
    assert all(type(b).__name__ == "BatchEncoding" for b in sharp.batches)
    want = reference_top_eigenvalue(_Reference(module), lambda m, b: m(b), sharp.batches)
    assert sharp.history[-1]["dyn/sharpness"] == pytest.approx(want, rel=1e-4)
    assert eos.history[-1]["dyn/eos_sharpness"] == pytest.approx(want, rel=1e-4)
    # SGDLyapunov(method="hvp") on a module without forward: the loss is all it needs
    assert [h["step"] for h in lyapunov.history] == [6]
    assert lyapunov.history[-1]["dyn/wme_sharpness"] > 0
    assert monitor.history[-1]["dyn/grad_norm_preclip"] > 0


def test_sgd_lyapunov_hvp_takes_dict_batches_from_a_module_without_forward():
    """The 1.0 regression: a criterion check called ``pl_module(x)`` though ``"hvp"`` needs none."""

    class NoForward(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

        def training_step(self, batch, batch_idx):
            return F.mse_loss(self.net(batch["x"]), batch["y"])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    data = [{"x": x[i], "y": x[i, :1].sin()} for i in range(32)]
    lyapunov = SGDLyapunov(every_n_steps=4, method="hvp", probe_size=32, num_steps=40, num_lrs=2, batch_sizes=[],
                           hvp_directions=3, at_fit_end=False)
    module = NoForward()
    fit(module, DataLoader(data, batch_size=8), [lyapunov], max_steps=4)
    assert [h["step"] for h in lyapunov.history] == [4]
    # its sharpness is the top eigenvalue of the probe loss's Hessian (the whole set here)
    class Wrap(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, b):
            return F.mse_loss(self.net(b["x"]), b["y"])

    top = reference_top_eigenvalue(Wrap(module.net), lambda m, b: m(b), [lyapunov.data])
    assert lyapunov.history[-1]["dyn/wme_sharpness"] == pytest.approx(top, rel=1e-4)
