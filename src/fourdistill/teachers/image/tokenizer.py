"""A CLIP byte-level BPE tokenizer built offline from the world's captions and plain English.

CLIP's tokenizer splits text into words, maps each byte to a printable character
(`byte_alphabet`), marks the last character of a word with `</w>`, and applies learned merges
in rank order. Its vocabulary starts with the 256 byte characters and their `</w>` forms, then
one entry per merge, then `<|startoftext|>` and `<|endoftext|>`. We build the same two files
(vocab.json, merges.txt) by learning merges on a small word list until every listed word is a
single token; any other text still tokenizes (it falls back to shorter pieces and bytes).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from transformers import CLIPTokenizer

from ...io import atomic_path
from ...world.scene import COLORS, MOTION_VERBS, SHAPE_NOUNS

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
END_OF_WORD = "</w>"

# Words a prompt about the world, or an ordinary prompt, is made of. The world's own words
# (colours, shapes, motions) are added from fourdistill.world at build time.
ENGLISH_WORDS = """
a an the of and or to in on at by for with from into onto over under above below near next
beside behind between around through across along up down left right front back top bottom
is are was were be been being has have had do does did will would can could should may might
it its this that these those there here what which who whom whose where when why how
i you he she we they me him her us them my your his our their one two three four five six
seven eight nine ten first second third last other another same different each every all some
no not only very more most less least many much few little big small large tiny huge tall
short long wide narrow round square flat thin thick bright dark light heavy soft hard shiny
matte red green blue yellow purple orange white black gray grey brown pink cyan magenta gold
silver colour color colors colours cube cubes box boxes ball balls sphere spheres cylinder
cylinders cone cones ring rings torus block blocks object objects shape shapes toy toys thing
things floor ground table tile tiles wall sky scene picture photo photograph image render
rendering drawing painting view views camera cameras angle side seen looking look looks
time times moment frame frames later earlier before after now then again still while during
start end beginning middle fast slow slowly quickly motion moving move moves moved spinning
spin spins rotating rotate turning turn turns bouncing bounce bounces jumping jump rolling roll
sliding slide slides circling circle circles orbiting orbit growing grow grows shrinking shrink
shrinks falling fall rising rise standing stand sitting sit resting rest lying static still
stopped high low close far closer farther distance zoom zoomed rotated moved shifted
person people man woman child dog cat bird car tree house flower water fire stone wood metal
glass paper plastic cloth day night morning evening sun moon star light shadow shadows
make made makes show shows showing shown draw drawn take taken give given get got see saw
good bad new old best better beautiful nice clean simple plain detailed realistic style
world space place way part piece group set pair kind type lot number amount
""".split()


def byte_alphabet() -> dict[int, str]:
    """Byte -> printable character, the reversible byte mapping of byte-level BPE (GPT-2, CLIP).

    Printable Latin-1 bytes map to themselves; the others (control bytes, space, ...) map to
    code points from 256 upwards, in byte order.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def world_words() -> list[str]:
    """The words of every caption the world can produce."""
    words = ["a", "an", "next", "to", "and"] + list(COLORS) + list(SHAPE_NOUNS.values())
    words += [v for v in MOTION_VERBS.values() if v]
    return words


def _symbols(word: str, alphabet: dict[int, str]) -> tuple[str, ...]:
    chars = [alphabet[b] for b in word.encode("utf-8")]
    return tuple(chars[:-1]) + (chars[-1] + END_OF_WORD,)


def learn_merges(word_counts: dict[str, int]) -> list[tuple[str, str]]:
    """Greedy BPE: repeatedly merge the most frequent adjacent pair until every word is one symbol.

    Ties break on the pair itself, so the result is deterministic.
    """
    alphabet = byte_alphabet()
    words = {w: list(_symbols(w, alphabet)) for w in sorted(word_counts)}
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter = Counter()
        for w, sym in words.items():
            for a, b in zip(sym, sym[1:]):
                pairs[(a, b)] += word_counts[w]
        if not pairs:
            return merges
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        a, b = best
        for w, sym in words.items():
            if len(sym) < 2:
                continue
            out, i = [], 0
            while i < len(sym):
                if i + 1 < len(sym) and sym[i] == a and sym[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            words[w] = out


def build_vocab(words: list[str], world_weight: int = 10) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """vocab (token -> id) and merges (in rank order) in CLIP's layout for `words`.

    `words` are lower-case words; the world's words count `world_weight` times so that their
    merges come first.
    """
    counts = Counter()
    for w in words:
        if not w or w != w.lower() or not w.isalpha():
            raise ValueError(f"tokenizer word list: {w!r} is not a lower-case alphabetic word")
        counts[w] += 1
    for w in world_words():
        counts[w] += world_weight
    merges = learn_merges(dict(counts))
    alphabet = byte_alphabet()
    base = [alphabet[b] for b in range(256)]
    tokens = base + [c + END_OF_WORD for c in base] + [a + b for a, b in merges] + [BOS, EOS]
    vocab: dict[str, int] = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    return vocab, merges


def write_vocab_files(folder) -> None:
    """Write vocab.json and merges.txt next to a saved tokenizer.json (transformers 5 saves only
    the latter), so every CLIPTokenizer implementation, old or new, loads the folder."""
    folder = Path(folder)
    model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    _write_vocab(folder, model["vocab"], merges)


def _write_vocab(folder: Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:

    with atomic_path(folder / "vocab.json") as tmp:
        tmp.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    with atomic_path(folder / "merges.txt") as tmp:
        tmp.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")


def build_tokenizer(folder, words: list[str] | None = None, model_max_length: int = 77):
    """Build the tokenizer, save it to `folder` (CLIP layout) and return it loaded from there.

    model_max_length 77: CLIP's context length (Stable Diffusion 1.x/2.x).
    """


    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(sorted(set(ENGLISH_WORDS + world_words())) if words is None else words)
    _write_vocab(folder, vocab, merges)
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "unk_token": EOS,
        "do_lower_case": True,
    }
    with atomic_path(folder / "tokenizer_config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
    return CLIPTokenizer.from_pretrained(str(folder))
