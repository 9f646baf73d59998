#!/usr/bin/python3
"""gen_reference.py: independent reference ids for the C tokenizer tests.

Reimplements HF BertJapaneseTokenizer.tokenize (shared/reference/model.md §2)
in plain Python from its description -- special-token split, NFKC
(unicodedata), MeCab (the `mecab` command-line program, one input line per
chunk), str.split(), greedy longest-match WordPiece -- so that the C code
(utf8proc, the MeCab C API, a hash-table WordPiece) is checked against a
second implementation that shares none of its code.

It cannot run unidic-lite compatibility mode (that uses lattice boundary
constraints, which the mecab program has no option for), so it covers
UniDic without compat and IPAdic.

Usage (Debian python3 and mecab; data from shared/data):
  /usr/bin/python3 gen_reference.py DATA_DIR > ref_ids.jsonl
Output: JSON lines {"dict": "unidic"|"ipadic", "src": "jsquad-p:<id>" |
"jsquad-q:<id>" | "text", "text": <only for "text">, "ids": [...]}.
"""
import json
import subprocess
import sys
import unicodedata

DICTS = {"unidic": "/var/lib/mecab/dic/unidic", "ipadic": "/var/lib/mecab/dic/ipadic-utf8"}
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
N_PARAGRAPHS = 80     # enough to cover kana, kanji, ASCII, numbers, brackets
N_QUERIES = 200

# Hand-written single-line cases (no newline: the mecab program parses one
# line per call, as the C code parses one chunk per call).
TEXTS = [
    "アップルストアでiPhone８が発売された。",
    "東北大学", "株式会社", "アップルストア", "ネットニュースサイト", "研究所",
    "一昨日から雨が降り続いている", "iPhone15Pro", "2024年3月", "COVID-19",
    "東京都に住んでいる外国人が増えています。",
    "検索エンジンは文書を転置インデックスに格納し、クエリを高速に処理します。",
    "ＡＢＣ１２３（全角）とｶﾀｶﾅ", "㍿と㌔と①②③", "Ｈｅｌｌｏ，　Ｗｏｒｌｄ！",
    "title [SEP] 本文です。", "[CLS]文頭[MASK]と[UNK]と[PAD]",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "絵文字😀と𠮷野家", "café naïve Ǆ ﬁ", "e\u0301 か\u3099 ｶﾞ",
    "x" * 150, "ア" * 120, "𪚲𪚲𪚲",
]


def nfkc(s):
    return unicodedata.normalize("NFKC", s)


def load_vocab(path):
    vocab = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            vocab[line.rstrip("\n")] = i
    return vocab


def wordpiece(word, vocab):
    if len(word) > 100:
        return ["[UNK]"]
    out, start = [], 0
    while start < len(word):
        end, found = len(word), None
        while start < end:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                found = piece
                break
            end -= 1
        if found is None:
            return ["[UNK]"]
        out.append(found)
        start = end
    return out


def split_special(text):
    """[(is_special, chunk)] around literal special tokens."""
    out, pos, i = [], 0, 0
    while i < len(text):
        hit = next((s for s in SPECIAL if text.startswith(s, i)), None)
        if hit:
            if i > pos:
                out.append((False, text[pos:i]))
            out.append((True, hit))
            i = pos = i + len(hit)
        else:
            i += 1
    if pos < len(text):
        out.append((False, text[pos:]))
    return out


def mecab_lines(dicdir, lines):
    """Words of each line, one mecab process for all of them.

    -Owakati joins a line's surfaces with single spaces. A surface never holds
    a space (MeCab drops its SPACE class), so splitting the joined line on
    whitespace gives exactly the concatenation of surface.split() over the
    surfaces, which is what WordpieceTokenizer sees."""
    p = subprocess.run(
        ["mecab", "-r", "/dev/null", "-d", dicdir, "-b", "1048576", "-Owakati"],
        input="".join(l + "\n" for l in lines).encode(), capture_output=True, check=True)
    res = p.stdout.decode().split("\n")[:-1]
    assert len(res) == len(lines), (len(res), len(lines))
    return [r.split() for r in res]


def tokenize_all(dicdir, texts, vocab):
    plans, lines = [], []
    for t in texts:
        plan = []
        for is_sp, chunk in split_special(t):
            if is_sp:
                plan.append(("sp", chunk))
            else:
                n = nfkc(chunk)
                assert "\n" not in n and "\r" not in n
                plan.append(("line", len(lines)))
                lines.append(n)
        plans.append(plan)
    surf = mecab_lines(dicdir, lines)
    out = []
    for plan in plans:
        ids = []
        for kind, v in plan:
            if kind == "sp":
                ids.append(vocab[v])
                continue
            for w in surf[v]:
                ids.extend(vocab[p] for p in wordpiece(w, vocab))
        out.append(ids)
    return out


def main():
    data = sys.argv[1]
    vocab = load_vocab(data + "/bert-base-japanese-v3/vocab.txt")
    paras, queries = [], []
    with open(data + "/jsquad/valid.corpus.tsv", encoding="utf-8") as f:
        for line in f:
            pid, _title, text = line.rstrip("\n").split("\t", 2)
            paras.append((pid, text))
    with open(data + "/jsquad/valid.queries.tsv", encoding="utf-8") as f:
        for line in f:
            qid, text = line.rstrip("\n").split("\t", 1)
            queries.append((qid, text))
    step_p = max(1, len(paras) // N_PARAGRAPHS)
    step_q = max(1, len(queries) // N_QUERIES)
    srcs = [("jsquad-p:" + i, t) for i, t in paras[::step_p][:N_PARAGRAPHS]]
    srcs += [("jsquad-q:" + i, t) for i, t in queries[::step_q][:N_QUERIES]]
    srcs += [("text", t) for t in TEXTS]
    for name, dicdir in DICTS.items():
        ids = tokenize_all(dicdir, [t for _, t in srcs], vocab)
        for (src, t), row in zip(srcs, ids):
            rec = {"dict": name, "src": src}
            if src == "text":
                rec["text"] = t
            rec["ids"] = row
            print(json.dumps(rec, ensure_ascii=False))


if __name__ == "__main__":
    main()
