#!/usr/bin/python3
"""colbert_ref.py: an independent PyTorch reference of the JaPLAID encoder.

Written from the math in shared/reference/model.md (BERT post-LN encoder,
ColBERT linear head without bias, L2 normalisation) and the safetensors
format description (model.md section 4) -- not from the C code, and without
the `transformers` or `safetensors` packages (they are not installed here).
It never tokenises: token ids and masks come from `japlaid tokenize`, so the
reference needs no MeCab.

Run it with /usr/bin/python3 (Debian's torch 1.13 and numpy live there).

Subcommands:
  encode --model DIR --input IN.json --output OUT.json [--precision float32|float64]
      IN.json = {"sequences": [{"ids": [...], "attn": [...]?, "keep": [...]?}, ...]}
      attn: attention mask (default all 1); keep: which positions to output
      (default all). OUT.json = {"embeddings": [[[...dim...], ...], ...]} -- for
      each sequence the output rows at kept positions, L2-normalised.
      float64 (the default) computes in double precision: the closest thing to
      the exact function, which is what C float32 results are judged against.
  write-random --out DIR --vocab VOCAB [--layers 2 --hidden 48 --heads 3
      --intermediate 96 --max-position 512 --dim 24 --seed 7 --dtype F16
      --no-bert-prefix]
      A checkpoint written by this program's own safetensors writer and
      random generator (numpy), so the C loader is tested on files that it
      did not write. Its artifact.metadata nests the settings under "config"
      and its safetensors carries the legacy position_ids tensor, as some
      real exports do.
  info --model DIR: print the parsed config as JSON.

The module is also imported by make_goldens.py and encode_bench.py.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------
# safetensors (model.md section 4): 8-byte little-endian header length N,
# N bytes of JSON, then the data area; offsets are relative to it.

_NP_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}


def st_read(path):
    """Returns ({name: np.ndarray}, metadata dict). BF16 is widened to float32."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(f"{path}: header length {n} past the end")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        dt = e["dtype"]
        shape = tuple(e["shape"])
        count = int(np.prod(shape)) if shape else 1
        if base + end > len(data):
            raise ValueError(f"{path}: tensor {name} past the end")
        arr = np.frombuffer(data, dtype=_NP_DTYPES[dt], count=count, offset=base + begin)
        if dt == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.reshape(shape)
    return out, meta


def _bf16_bits(x):
    """float32 -> bfloat16 bit patterns, round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = u + 0x7FFF + ((u >> 16) & 1)
    return (u >> 16).astype(np.uint16)


def st_write(path, tensors, metadata=None):
    """tensors: list of (name, np.ndarray, dtype string). Header padded with
    spaces to a multiple of 8 bytes, data packed in the given order."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    blobs = []
    off = 0
    for name, arr, dt in tensors:
        if dt == "BF16":
            b = _bf16_bits(arr).astype("<u2").tobytes()
        else:
            b = np.ascontiguousarray(arr).astype(_NP_DTYPES[dt]).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# Checkpoint loading.

def _read_json(path):
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def load_vocab(path):
    """id -> token; only the line terminator is removed (id 15 is a space)."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [l[:-1].decode("utf-8") if l.endswith(b"\r") else l.decode("utf-8") for l in lines]


class Model:
    """A loaded checkpoint directory: BERT + ColBERT head, or the static table."""

    def __init__(self, directory, precision=torch.float64):
        self.dir = directory
        self.dtype = precision
        cfg = _read_json(os.path.join(directory, "config.json"))
        meta = _read_json(os.path.join(directory, "artifact.metadata"))
        if isinstance(meta.get("config"), dict):
            meta = meta["config"]
        self.config = cfg
        self.colbert = meta
        self.vocab = load_vocab(os.path.join(directory, "vocab.txt"))
        tensors, _ = st_read(os.path.join(directory, "model.safetensors"))
        self.kind = cfg["model_type"]

        def t(name):
            return torch.from_numpy(np.array(tensors[name], dtype=np.float64)).to(precision)

        if self.kind == "japlaid-static":
            self.static = t("embedding")
            self.dim = self.static.shape[1]
            return
        if self.kind != "bert":
            raise ValueError(f"unsupported model_type {self.kind}")
        if cfg.get("hidden_act", "gelu") != "gelu":
            raise ValueError("only the erf GELU is implemented")
        p = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""
        self.hidden = cfg["hidden_size"]
        self.heads = cfg["num_attention_heads"]
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.word = t(p + "embeddings.word_embeddings.weight")
        self.pos = t(p + "embeddings.position_embeddings.weight")
        self.type = t(p + "embeddings.token_type_embeddings.weight")
        self.emb_ln = (t(p + "embeddings.LayerNorm.weight"), t(p + "embeddings.LayerNorm.bias"))
        self.layers = []
        for i in range(cfg["num_hidden_layers"]):
            q = f"{p}encoder.layer.{i}."
            self.layers.append({k: t(q + v) for k, v in {
                "qw": "attention.self.query.weight", "qb": "attention.self.query.bias",
                "kw": "attention.self.key.weight", "kb": "attention.self.key.bias",
                "vw": "attention.self.value.weight", "vb": "attention.self.value.bias",
                "aow": "attention.output.dense.weight", "aob": "attention.output.dense.bias",
                "ln1g": "attention.output.LayerNorm.weight", "ln1b": "attention.output.LayerNorm.bias",
                "iw": "intermediate.dense.weight", "ib": "intermediate.dense.bias",
                "ow": "output.dense.weight", "ob": "output.dense.bias",
                "ln2g": "output.LayerNorm.weight", "ln2b": "output.LayerNorm.bias",
            }.items()})
        self.proj = t("linear.weight")
        self.dim = self.proj.shape[0]

    @torch.no_grad()
    def forward(self, ids, attn):
        """ids, attn: LongTensor [B, L]. Returns [B, L, dim], L2-normalised rows."""
        if self.kind == "japlaid-static":
            return F.normalize(self.static[ids], p=2, dim=-1)
        B, L = ids.shape
        H, nh = self.hidden, self.heads
        hd = H // nh
        x = self.word[ids] + self.pos[:L].unsqueeze(0) + self.type[0]
        x = F.layer_norm(x, (H,), self.emb_ln[0], self.emb_ln[1], self.eps)
        # HF's extended attention mask: add the dtype's lowest value where the
        # key is not attended (a row with no attended key becomes uniform).
        ext = (1.0 - attn.to(self.dtype))[:, None, None, :] * torch.finfo(self.dtype).min
        for w in self.layers:
            def split(y):
                return y.view(B, L, nh, hd).transpose(1, 2)
            q = split(x @ w["qw"].T + w["qb"])
            k = split(x @ w["kw"].T + w["kb"])
            v = split(x @ w["vw"].T + w["vb"])
            scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + ext
            probs = torch.softmax(scores, dim=-1)
            ctx = (probs @ v).transpose(1, 2).reshape(B, L, H)
            x = F.layer_norm(x + ctx @ w["aow"].T + w["aob"], (H,), w["ln1g"], w["ln1b"], self.eps)
            h = F.gelu(x @ w["iw"].T + w["ib"])          # erf GELU (torch's default)
            x = F.layer_norm(x + h @ w["ow"].T + w["ob"], (H,), w["ln2g"], w["ln2b"], self.eps)
        y = x @ self.proj.T
        return F.normalize(y, p=2, dim=-1)

    def encode_sequences(self, seqs, batch_tokens=4096):
        """seqs: list of dicts with ids, optional attn and keep. Sequences are
        encoded one length group at a time, padded with [PAD] (id 0) and
        attention 0. Returns a list of np.float32 arrays [rows, dim]."""
        out = [None] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]["ids"]))
        i = 0
        while i < len(order):
            L = len(seqs[order[i]]["ids"])
            nb = max(1, min(len(order) - i, batch_tokens // L))
            group = order[i:i + nb]
            ids = torch.zeros((nb, L), dtype=torch.long)
            attn = torch.zeros((nb, L), dtype=torch.long)
            for r, j in enumerate(group):
                s = seqs[j]
                n = len(s["ids"])
                ids[r, :n] = torch.tensor(s["ids"], dtype=torch.long)
                attn[r, :n] = torch.tensor(s.get("attn") or [1] * n, dtype=torch.long)
            y = self.forward(ids, attn)
            for r, j in enumerate(group):
                s = seqs[j]
                n = len(s["ids"])
                keep = s.get("keep")
                rows = [p for p in range(n) if keep is None or keep[p]]
                out[j] = y[r, rows].to(torch.float32).numpy()
            i += nb
        return out


# --------------------------------------------------------------------------
# write-random: this program's own checkpoint generator.

def write_random(out, vocab_path, layers=2, hidden=48, heads=3, intermediate=96,
                 max_position=512, dim=24, seed=7, dtype="F16", bert_prefix=False):
    if hidden % heads:
        raise ValueError("hidden must be a multiple of heads")
    os.makedirs(out, exist_ok=True)
    with open(vocab_path, "rb") as f:
        vocab_bytes = f.read()
    V = len(load_vocab(vocab_path))
    rng = np.random.RandomState(seed)
    p = "bert." if bert_prefix else ""
    H, I = hidden, intermediate

    def mat(*shape, std=0.05):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def gamma(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    ts = [
        (p + "embeddings.word_embeddings.weight", mat(V, H, std=0.5), dtype),
        (p + "embeddings.position_embeddings.weight", mat(max_position, H, std=0.1), dtype),
        (p + "embeddings.token_type_embeddings.weight", mat(2, H, std=0.1), dtype),
        (p + "embeddings.LayerNorm.weight", gamma(H), dtype),
        (p + "embeddings.LayerNorm.bias", mat(H), dtype),
        # Saved by older transformers; a loader must ignore it.
        (p + "embeddings.position_ids", np.arange(max_position, dtype=np.int64)[None, :], "I64"),
    ]
    for i in range(layers):
        q = f"{p}encoder.layer.{i}."
        # Larger query/key weights make attention far from uniform, so masking
        # and softmax errors cannot hide.
        ts += [
            (q + "attention.self.query.weight", mat(H, H, std=0.3), dtype),
            (q + "attention.self.query.bias", mat(H), dtype),
            (q + "attention.self.key.weight", mat(H, H, std=0.3), dtype),
            (q + "attention.self.key.bias", mat(H), dtype),
            (q + "attention.self.value.weight", mat(H, H, std=0.2), dtype),
            (q + "attention.self.value.bias", mat(H), dtype),
            (q + "attention.output.dense.weight", mat(H, H, std=0.2), dtype),
            (q + "attention.output.dense.bias", mat(H), dtype),
            (q + "attention.output.LayerNorm.weight", gamma(H), dtype),
            (q + "attention.output.LayerNorm.bias", mat(H), dtype),
            (q + "intermediate.dense.weight", mat(I, H, std=0.2), dtype),
            (q + "intermediate.dense.bias", mat(I), dtype),
            (q + "output.dense.weight", mat(H, I, std=0.2), dtype),
            (q + "output.dense.bias", mat(H), dtype),
            (q + "output.LayerNorm.weight", gamma(H), dtype),
            (q + "output.LayerNorm.bias", mat(H), dtype),
        ]
    ts += [
        (p + "pooler.dense.weight", mat(H, H), dtype),
        (p + "pooler.dense.bias", mat(H), dtype),
        ("linear.weight", mat(dim, H, std=0.2), dtype),
    ]
    # Reverse order on disk: the reader must not rely on key order.
    st_write(os.path.join(out, "model.safetensors"), ts[::-1], {"format": "pt"})
    torch_dtype = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype]
    cfg = {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": H,
        "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": I,
        "max_position_embeddings": max_position, "type_vocab_size": 2, "vocab_size": V,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0,
        "torch_dtype": torch_dtype, "_name_or_path": f"colbert_ref/random-s{seed}",
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    meta = {"config": {"query_token_id": "[unused0]", "doc_token_id": "[unused1]",
                       "query_maxlen": 32, "doc_maxlen": 300, "dim": dim,
                       "attend_to_mask_tokens": False, "mask_punctuation": True,
                       "similarity": "cosine", "nbits": 2},
            "meta": {"generator": "tools/reference/colbert_ref.py"}}
    with open(os.path.join(out, "artifact.metadata"), "w") as f:
        json.dump(meta, f, indent=4)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertJapaneseTokenizer", "do_lower_case": False,
                   "word_tokenizer_type": "mecab", "subword_tokenizer_type": "wordpiece",
                   "mecab_kwargs": {"mecab_dic": "unidic_lite"}, "model_max_length": 512}, f)
    with open(os.path.join(out, "vocab.txt"), "wb") as f:
        f.write(vocab_bytes)


# --------------------------------------------------------------------------

def _precision(name):
    return {"float32": torch.float32, "float64": torch.float64}[name]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode")
    e.add_argument("--model", required=True)
    e.add_argument("--input", required=True)
    e.add_argument("--output", required=True)
    e.add_argument("--precision", default="float64", choices=["float32", "float64"])
    w = sub.add_parser("write-random")
    w.add_argument("--out", required=True)
    w.add_argument("--vocab", required=True)
    w.add_argument("--layers", type=int, default=2)
    w.add_argument("--hidden", type=int, default=48)
    w.add_argument("--heads", type=int, default=3)
    w.add_argument("--intermediate", type=int, default=96)
    w.add_argument("--max-position", type=int, default=512)
    w.add_argument("--dim", type=int, default=24)
    w.add_argument("--seed", type=int, default=7)
    w.add_argument("--dtype", default="F16", choices=["F32", "F16", "BF16"])
    w.add_argument("--no-bert-prefix", action="store_true")
    i = sub.add_parser("info")
    i.add_argument("--model", required=True)
    a = ap.parse_args(argv)
    if a.cmd == "encode":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
        m = Model(a.model, _precision(a.precision))
        with open(a.input, "r", encoding="utf-8") as f:
            seqs = json.load(f)["sequences"]
        embs = m.encode_sequences(seqs)
        with open(a.output, "w") as f:
            json.dump({"embeddings": [[[float(v) for v in row] for row in e] for e in embs]}, f)
    elif a.cmd == "write-random":
        write_random(a.out, a.vocab, a.layers, a.hidden, a.heads, a.intermediate,
                     a.max_position, a.dim, a.seed, a.dtype, not a.no_bert_prefix)
    else:
        m = Model(a.model, torch.float32)
        print(json.dumps({"kind": m.kind, "config": m.config, "colbert": m.colbert, "dim": m.dim}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
