#!/usr/bin/env python3
"""Reports import cycles between the modules of larder's crates.

Usage: scripts/check-cycles.py CRATE_DIR...   (e.g. store server signer sync)

Each crate root (src/lib.rs, src/main.rs: separate crates) gives a module
graph. A module is a file reached through `mod name;` declarations; inline
modules count as part of their file, and `#[cfg(test)]` modules are left
out (a test module always looks at its parent). `#[path]` is followed.
Edges:
  - parent -> child for every `mod child;` (a parent stands on its children),
  - M -> T for every `crate::...`, `super::...` or `self::...` path in M's
    code (`use` trees included, comments left out), where T is the longest
    prefix of the path that names a module. A path to an item that lib.rs
    or a parent re-exports therefore points at lib.rs or the parent.
Limits: a `super::` path inside an inline module resolves as if written
in its file (larder has no inline modules but `mod tests { ... }`), and
macros that build paths are not expanded.

A strongly connected component of more than one module is a cycle: a
reader cannot read it from the leaves up. That includes a child that uses
its parent's (or lib.rs's) items while the parent declares it.

Exits 1 and prints each cycle with the lines that make its edges.
"""

import os
import re
import sys

MOD_DECL = re.compile(
    r"^(?P<attrs>(?:[ \t]*#\[[^\]]*\][ \t]*\n)*)[ \t]*(?:pub(?:\([^)]*\))?\s+)?mod\s+(?P<name>\w+)\s*;",
    re.M,
)
USE_STMT = re.compile(r"\buse\s+([^;]*?);", re.S)
PATH_REF = re.compile(r"\b(crate|super|self)((?:::\w+)+)")


def strip_comments(text):
    """Removes // and /* */ comments (doc comments too) and string contents."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return re.sub(r"//[^\n]*", "", text)


def expand_use_tree(tree):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e'] (aliases dropped)."""
    tree = re.sub(r"\s+", " ", tree).strip()
    tree = re.sub(r"\s+as\s+\w+", "", tree)

    def split_top(s):
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        parts.append(cur)
        return [p.strip() for p in parts if p.strip()]

    def walk(prefix, s):
        brace = s.find("{")
        if brace < 0:
            return [prefix + s]
        head = s[:brace]
        inner = s[brace + 1 : s.rfind("}")]
        out = []
        for part in split_top(inner):
            out += walk(prefix + head, part)
        return out

    return [p.replace(" ", "") for p in walk("", tree)]


class Crate:
    def __init__(self, root_file):
        self.root_file = root_file
        self.modules = {}  # module path -> file
        self.edges = {}  # module path -> {target: [evidence]}
        self._discover(("crate",), root_file, mod_rs=True)

    def _discover(self, path, file, mod_rs):
        self.modules[path] = file
        with open(file, encoding="utf-8") as f:
            text = f.read()
        base = os.path.dirname(file)
        if not mod_rs:
            base = os.path.join(base, os.path.splitext(os.path.basename(file))[0])
        for m in MOD_DECL.finditer(text):
            if "cfg(test)" in m.group("attrs"):
                continue
            name = m.group("name")
            custom = re.search(r'#\[path\s*=\s*"([^"]+)"\]', m.group("attrs"))
            if custom:
                # #[path] is relative to the declaring file's directory.
                target = os.path.join(os.path.dirname(file), custom.group(1))
                self._discover(path + (name,), target, mod_rs=True)
                continue
            flat = os.path.join(base, name + ".rs")
            nested = os.path.join(base, name, "mod.rs")
            if os.path.exists(flat):
                self._discover(path + (name,), flat, mod_rs=False)
            elif os.path.exists(nested):
                self._discover(path + (name,), nested, mod_rs=True)
            else:
                sys.exit(f"check-cycles: {file}: no file for `mod {name};`")

    def resolve(self, here, segments):
        """Longest module prefix named by a crate/super/self path from `here`."""
        head, rest = segments[0], segments[1:]
        if head == "crate":
            start = ("crate",)
        elif head == "super":
            start = here[:-1]
            while rest and rest[0] == "super":
                start, rest = start[:-1], rest[1:]
        else:  # self
            start = here
        if not start:
            return None
        best = start
        cur = start
        for seg in rest:
            cur = cur + (seg,)
            if cur in self.modules:
                best = cur
            else:
                break
        return best

    def add_edge(self, src, dst, why):
        if dst is None or dst == src:
            return
        self.edges.setdefault(src, {}).setdefault(dst, []).append(why)

    def build(self):
        for path, file in self.modules.items():
            with open(file, encoding="utf-8") as f:
                raw = f.read()
            # Child modules of this file: the parent stands on them.
            for m in MOD_DECL.finditer(raw):
                child = path + (m.group("name"),)
                if child in self.modules:
                    self.add_edge(path, child, f"{file}: mod {m.group('name')};")
            text = strip_comments(raw)
            # Leave out inline #[cfg(test)] modules: `mod tests { ... }`.
            text = strip_test_blocks(text)
            refs = []
            for u in USE_STMT.finditer(text):
                for p in expand_use_tree(u.group(1)):
                    segs = p.split("::")
                    if segs[0] in ("crate", "super", "self"):
                        refs.append((segs, "use " + p))
            text = USE_STMT.sub("", text)
            for m in PATH_REF.finditer(text):
                segs = [m.group(1)] + m.group(2).strip(":").split("::")
                refs.append((segs, m.group(0)))
            for segs, shown in refs:
                self.add_edge(path, self.resolve(path, segs), f"{file}: {shown}")

    def cycles(self):
        """Tarjan's strongly connected components of more than one module."""
        index, low, on_stack, stack, out = {}, {}, set(), [], []
        counter = [0]

        def visit(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on_stack.add(v)
            for w in self.edges.get(v, {}):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                scc = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    scc.append(w)
                    if w == v:
                        break
                if len(scc) > 1:
                    out.append(sorted(scc))

        sys.setrecursionlimit(10000)
        for v in sorted(self.modules):
            if v not in index:
                visit(v)
        return out


def strip_test_blocks(text):
    """Removes `#[cfg(test)] mod name { ... }` blocks (brace-matched)."""
    out = []
    pos = 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < pos:
            continue
        out.append(text[pos : m.start()])
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        pos = i
    out.append(text[pos:])
    return "".join(out)


def name(path):
    return "::".join(path)


def main(dirs):
    if not dirs:
        sys.exit(__doc__)
    failed = False
    for d in dirs:
        roots = [os.path.join(d, "src", f) for f in ("lib.rs", "main.rs")]
        roots = [r for r in roots if os.path.exists(r)]
        if not roots:
            sys.exit(f"check-cycles: {d}: no src/lib.rs or src/main.rs")
        for root in roots:
            crate = Crate(root)
            crate.build()
            cycles = crate.cycles()
            if not cycles:
                print(f"check-cycles: {root}: {len(crate.modules)} modules, no import cycles")
                continue
            failed = True
            print(f"check-cycles: FAIL: {root}: {len(cycles)} import cycle(s)", file=sys.stderr)
            for scc in cycles:
                members = set(scc)
                print(f"  cycle: {', '.join(name(m) for m in scc)}", file=sys.stderr)
                for src in scc:
                    for dst, why in sorted(crate.edges.get(src, {}).items()):
                        if dst in members:
                            print(f"    {name(src)} -> {name(dst)}  ({why[0]})", file=sys.stderr)
    if failed:
        print(
            "check-cycles: modules must read from the leaves up: move what both sides "
            "use into a module of its own below them",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
