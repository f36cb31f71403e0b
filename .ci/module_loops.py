#!/usr/bin/env python3
"""Fails if two modules of a crate import each other, directly or through others.

ARCHITECTURE.md promises that no module of any crate imports another that imports it back;
this keeps the promise checked. Edges come from `crate::a::b` and `super::` paths in each
file under `crates/*/src` (test modules left out); an item re-exported from lib.rs counts as
an edge to the crate root. Usage: python3 .ci/module_loops.py [REPO]"""
import os, re, sys, itertools
root = sys.argv[1] if len(sys.argv) > 1 else '.'
def modpath(src, f):
    rel = os.path.relpath(f, src)[:-3].split(os.sep)
    if rel[-1] in ('lib', 'main'): rel = rel[:-1]
    elif rel[-1] == 'mod': rel = rel[:-1]
    return tuple(rel)
def strip_comments(s):
    s = re.sub(r'//[^\n]*', '', s)
    return s
def expand_use(body):
    # expand a::{b, c::{d}} into list of paths (tokens)
    out = []
    def rec(prefix, text):
        depth = 0; parts = []; cur = ''
        for ch in text:
            if ch == '{': depth += 1
            if ch == '}': depth -= 1
            if ch == ',' and depth == 0: parts.append(cur); cur = ''
            else: cur += ch
        parts.append(cur)
        for p in parts:
            p = p.strip()
            if not p: continue
            m = re.match(r'^([\w:]*?)(::)?\{(.*)\}$', p, re.S)
            if m:
                rec(prefix + [x for x in m.group(1).split('::') if x], m.group(3))
            else:
                p = p.split(' as ')[0].strip()
                out.append(prefix + [x for x in p.split('::') if x])
    rec([], body)
    return out
total = 0
for crate in sorted(os.listdir(os.path.join(root, 'crates'))):
    src = os.path.join(root, 'crates', crate, 'src')
    if not os.path.isdir(src): continue
    files = []
    for d, _, fs in os.walk(src):
        files += [os.path.join(d, f) for f in fs if f.endswith('.rs')]
    mods = {modpath(src, f): f for f in files}
    edges = {m: set() for m in mods}
    def resolve(path):
        # longest prefix that is a module
        for n in range(len(path), -1, -1):
            if tuple(path[:n]) in mods: return tuple(path[:n])
        return ()
    for m, f in mods.items():
        s = strip_comments(open(f).read())
        # cut #[cfg(test)] mod tests { ... } roughly: drop from '#[cfg(test)]\nmod tests' to end
        i = s.find('#[cfg(test)]\nmod tests')
        if i >= 0: s = s[:i]
        paths = []
        for u in re.finditer(r'\buse\s+(crate|super|self)((?:::)[^;]*);', s, re.S):
            for p in expand_use(u.group(1) + u.group(2)):
                paths.append(p)
        for u in re.finditer(r'\b(crate|super)((?:::\w+)+)', s):
            paths.append([u.group(1)] + [x for x in u.group(2).split('::') if x])
        for p in paths:
            if p[0] == 'crate': target = resolve(p[1:])
            elif p[0] == 'super':
                base = list(m[:-1]) if not f.endswith('mod.rs') else list(m[:-1])
                target = resolve(base + p[1:])
            elif p[0] == 'self':
                target = resolve(list(m) + p[1:])
            else: continue
            if target != m and not (len(target) < len(m) and m[:len(target)] == target and target != ()):
                edges[m].add(target)
            elif target == () and m != ():
                edges[m].add(())
    # lib root: edges from lib to modules only if lib uses them as items (not `mod x;` decls)
    # SCCs
    index = {}; low = {}; stack = []; on = set(); sccs = []; c = [0]
    sys.setrecursionlimit(10000)
    def strong(v):
        index[v] = low[v] = c[0]; c[0] += 1; stack.append(v); on.add(v)
        for w in edges.get(v, ()):
            if w not in mods: continue
            if w not in index: strong(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: sccs.append(comp)
    for v in mods:
        if v not in index: strong(v)
    for comp in sccs:
        total += 1
        print(crate + ': ' + ' <-> '.join('::'.join(x) or '(root)' for x in sorted(comp)))
print(f'{total} module loop(s)')
sys.exit(1 if total else 0)
