"""Trains the embedded toy LM family and writes it under models/toy-grammar/.

Run once (needs torch + transformers + tokenizers from PyPI; not needed by the
tests or the pipelines, which only read the committed result):

    python scripts/toy/train_toy_lm.py

The corpus is a synthetic grammar of three tasks on one character vocabulary:

    <abc|cba>     palindromes (mirror the letters before `|`)
    [dbca=abcd]   sorting (sorted letters after `=`)
    (3+4=7)       one-digit addition

Why a grammar rather than palindromes alone: three tasks give the model distinct
kinds of structure to learn (task identity, position inside an example, letter
identity, sorted order, carries), learned at different points in training, so
features of SAEs trained on successive checkpoints have something to match or not.

Output: models/toy-grammar/step{N}/{config.json, model.safetensors, tokenizer.json}
for log-spaced N, a GPT-NeoX architecture (the Pythia family's) with BOS = EOS = 0,
plus corpus files models/toy-grammar/corpus-{train,eval}.jsonl. Everything is
seeded, so a rerun on the same library versions reproduces the files.
"""

import json
import os
import random
import sys

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, decoders
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "models", "toy-grammar")
LETTERS = "abcdefgh"
CHARS = " <>|[]=()+" + LETTERS + "0123456789"
EOT = "<|endoftext|>"
CHECKPOINTS = [0, 4, 16, 32, 64, 128, 256, 512, 1024, 2000]
CTX = 64


def example(rng: random.Random) -> str:
    task = rng.randrange(3)
    if task == 0:
        s = "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 6)))
        return f"<{s}|{s[::-1]}>"
    if task == 1:
        s = "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 6)))
        return f"[{s}={''.join(sorted(s))}]"
    a, b = rng.randrange(10), rng.randrange(10)
    return f"({a}+{b}={a + b})"


def document(rng: random.Random) -> str:
    return " ".join(example(rng) for _ in range(rng.randint(4, 12)))


def write_corpus(path: str, n: int, seed: int) -> list:
    rng = random.Random(seed)
    docs = [document(rng) for _ in range(n)]
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    return docs


def make_tokenizer() -> Tokenizer:
    vocab = {EOT: 0}
    for c in CHARS:
        vocab[c] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=EOT))
    # One token per character.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([EOT])
    return tok


def batches(docs, tok, rng, batch):
    # SAELens-style packing: every context starts with BOS, documents separated by BOS.
    ids = []
    for d in docs:
        ids.append(0)
        ids.extend(tok.encode(d).ids)
    rows = len(ids) // CTX
    data = torch.tensor(ids[: rows * CTX]).view(rows, CTX)
    data[:, 0] = 0
    while True:
        perm = torch.randperm(rows, generator=rng)
        for i in range(0, rows - batch + 1, batch):
            yield data[perm[i : i + batch]]


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    train_docs = write_corpus(os.path.join(OUT, "corpus-train.jsonl"), 20000, seed=1)
    write_corpus(os.path.join(OUT, "corpus-eval.jsonl"), 2000, seed=2)
    tok = make_tokenizer()
    vocab = tok.get_vocab_size()
    cfg = GPTNeoXConfig(
        vocab_size=32,  # padded past the 29 used ids, as Pythia pads its vocabulary
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        hidden_act="gelu",
        rotary_pct=0.25,
        rotary_emb_base=10000,
        max_position_embeddings=128,
        use_parallel_residual=True,
        layer_norm_eps=1e-5,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=False,
    )
    assert vocab <= cfg.vocab_size
    model = GPTNeoXForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    gen = torch.Generator().manual_seed(0)
    it = batches(train_docs, tok, gen, 32)
    step = 0
    while True:
        if step in CHECKPOINTS:
            d = os.path.join(OUT, f"step{step}")
            model.save_pretrained(d, safe_serialization=True)
            tok.save(os.path.join(d, "tokenizer.json"))
            for extra in ("generation_config.json",):
                p = os.path.join(d, extra)
                if os.path.exists(p):
                    os.remove(p)
            print(f"saved step {step}", file=sys.stderr)
        if step == CHECKPOINTS[-1]:
            break
        x = next(it)
        out = model(input_ids=x, labels=x)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        step += 1
        if step % 200 == 0:
            print(f"step {step} loss {out.loss.item():.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
