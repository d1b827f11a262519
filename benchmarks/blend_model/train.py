"""Train the tiny Llama of benchmarks/blend_model/ from scratch on the CPU.

The task (task.py) is "what token followed k in the context?", learned with a
next-token loss on copied runs so that induction heads form. Run from the
repository root:

    OMP_NUM_THREADS=1 python benchmarks/blend_model/train.py

It logs to stdout, evaluates on held-out prompts every --eval-every steps and
saves the weights (save_pretrained, safetensors) each time, so a stopped run
keeps its last evaluated model. --resume continues from the state file.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import task  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
EVAL_SEED = 1_000_003  # held-out prompts come from a seed training never uses


def make_model(hidden: int, layers: int, heads: int, intermediate: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=task.VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=512,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=task.BOS,
        eos_token_id=None,
        pad_token_id=None,
    )
    return LlamaForCausalLM(config).float()


@torch.no_grad()
def accuracy(model: LlamaForCausalLM, make_prompt, n: int, seed: int) -> float:
    """Share of n held-out prompts whose last-position argmax is the answer."""
    gen = torch.Generator().manual_seed(seed)
    prompts = [make_prompt(gen) for _ in range(n)]
    correct = 0
    for i in range(0, n, 50):
        chunk = prompts[i:i + 50]
        width = max(len(p.ids) for p in chunk)
        ids = torch.full((len(chunk), width), task.BOS, dtype=torch.long)
        for row, p in enumerate(chunk):
            ids[row, : len(p.ids)] = torch.tensor(p.ids)
        # Right padding is harmless: a causal model's last real position
        # never sees the padding after it.
        logits = model(input_ids=ids).logits
        last = torch.tensor([len(p.ids) - 1 for p in chunk])
        pred = logits[torch.arange(len(chunk)), last].argmax(-1)
        correct += int((pred == torch.tensor([p.answer for p in chunk])).sum())
    return correct / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=3000, help="length of the learning-rate schedule")
    ap.add_argument("--stop-step", type=int, default=None, help="stop after this step (schedule unchanged)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=256)
    ap.add_argument("--questions", type=int, default=16, help="copied runs after each training context")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-prompts", type=int, default=200)
    ap.add_argument("--max-minutes", type=float, default=100.0, help="stop (after saving) past this")
    ap.add_argument("--out", default=HERE, help="folder for the weights")
    ap.add_argument("--state", default=os.path.join(HERE, "train_state.pt"),
                    help="optimizer/step state for --resume (not part of the model)")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = make_model(args.hidden, args.layers, args.heads, args.intermediate)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    step = 0
    if args.resume:
        state = torch.load(args.state, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        step = state["step"]

    def lr_at(s: int) -> float:
        # Linear warmup, then cosine decay to a tenth of the peak.
        if s < args.warmup:
            return args.lr * (s + 1) / args.warmup
        frac = (s - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    n_params = sum(p.numel() for p in model.parameters())
    shown = dict(vars(args), out=os.path.relpath(args.out), state=os.path.relpath(args.state))
    print(f"seed={args.seed} params={n_params} torch={torch.__version__} transformers={transformers.__version__} "
          f"args={shown}", flush=True)
    t0 = time.time()
    loss_sum, loss_n = 0.0, 0
    model.train()
    while step < args.steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        ids, labels = task.training_batch(gen, args.batch, args.questions)
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=task.IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        loss_sum += loss.item()
        loss_n += 1
        minutes = (time.time() - t0) / 60
        done = step == args.steps or step == args.stop_step or minutes > args.max_minutes
        if step % args.eval_every == 0 or done:
            model.eval()
            acc_b = accuracy(model, task.boundary_prompt, args.eval_prompts, EVAL_SEED)
            acc_i = accuracy(model, task.inner_prompt, args.eval_prompts, EVAL_SEED + 1)
            model.train()
            print(f"step {step} loss {loss_sum / loss_n:.4f} lr {lr_at(step):.2e} "
                  f"acc_boundary {acc_b:.3f} acc_inner {acc_i:.3f} min {minutes:.1f}", flush=True)
            loss_sum, loss_n = 0.0, 0
            model.save_pretrained(args.out, safe_serialization=True)
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                        "step": step}, args.state)
        if done:
            break
    print(f"done step {step} minutes {(time.time() - t0) / 60:.1f}", flush=True)


if __name__ == "__main__":
    main()
