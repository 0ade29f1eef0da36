"""SAELens training throughput on random activations, for comparison with
`cargo run --release -p saepipe-sae --example bench_train`.

    .venv/bin/python scripts/bench/sae_train_saelens.py [steps] [batch]

Runs SAELens's TopK training step the way its SAETrainer does
(training_forward_pass with the dead-latent mask, backward, grad-norm clip 1.0,
Adam step, zero_grad) for TopK k=32, d_in=512 at d_sae 8192 and 32768, and for
ReLU+L1 (l1 coefficient 5) at d_sae 8192, on CPU.
"""

import sys
import time

import torch
from sae_lens.saes.sae import TrainStepInput
from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig


def main():
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 4096
    d_in = 512
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    cases = [("TopK k=32", 8192), ("TopK k=32", 32768), ("ReLU+L1", 8192)]
    for name, d_sae in cases:
        torch.manual_seed(0)
        if name.startswith("TopK"):
            sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=32))
            coefficients = {}
        else:
            sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=5.0))
            coefficients = {"l1": 5.0}
        opt = torch.optim.Adam(sae.parameters(), lr=2e-4, betas=(0.9, 0.999))
        data = [torch.rand(batch, d_in) + torch.rand(batch, d_in) - 1.0 for _ in range(2)]
        dead = torch.zeros(d_sae, dtype=torch.bool)

        def step(i):
            out = sae.training_forward_pass(
                TrainStepInput(sae_in=data[i % 2], coefficients=coefficients, dead_neuron_mask=dead,
                               n_training_steps=i, is_logging_step=False)
            )
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
            return out

        step(0)  # warm-up
        t0 = time.perf_counter()
        for i in range(steps):
            out = step(i + 1)
        secs = time.perf_counter() - t0
        print(f"SAELens {name} d_in={d_in} d_sae={d_sae} batch={batch}: {steps * batch / secs:.0f} tokens/s "
              f"({steps} steps in {secs:.2f}s; last loss {out.loss.item():.4f})")


if __name__ == "__main__":
    main()
