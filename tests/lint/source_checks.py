#!/usr/bin/env python3
"""Checks on aviary's sources that keep its layout rules true, printed as TAP.

    source_checks.py [ROOT]           run the checks (exit status 1 when one fails)
    source_checks.py --graph [ROOT]   print the include graph of ROOT/src for people

ROOT is the source tree (default: two directories above this script).

The checks:
  - no include cycle between the modules of each folder of src/ that is a
    library (a module is a basename: x.c and x.h are one node; the packet
    handlers, handlers.h and every handle_*.c, are one module);
  - src/broker/ includes neither OpenSSL nor SQLite (the transport and the
    database stay behind their own modules);
  - src/store/ includes nothing from broker/, nor util/config.h (the store
    is below the broker and knows no configuration file);
  - no function in src/ is longer than MAX_FUNCTION_LINES (see
    function_lengths() for how a function is measured);
  - clang-format --dry-run --Werror finds nothing to change in src/ and tests/
    (skipped when clang-format is not installed).

Standard library only, so that it runs wherever the build does.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys

# The library folders of src/ whose modules must not include each other in a circle.
CYCLE_FREE_DIRS = ["broker", "net", "store", "util", "tenancy", "web", "cluster"]
MAX_FUNCTION_LINES = 80
LONGEST_SHOWN = 10

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
# A call-like word that is not a function's name in its own definition.
NOT_A_NAME = {"__attribute__", "__typeof__", "typeof", "sizeof", "alignof", "_Alignof",
              "__declspec", "if", "while", "for", "switch", "return"}


# ---------------------------------------------------------------- reading the tree

def source_files(root, top, exts=(".c", ".h")):
    """Paths (relative to root, sorted) of the files under root/top ending in exts."""
    found = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.endswith(exts):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def read_lines(root, path):
    with open(os.path.join(root, path), encoding="utf-8", errors="replace") as f:
        return f.read().split("\n")


class Include:
    """One #include line: what it names and, for a file of the tree, which one."""

    def __init__(self, path, line, angle, name, target):
        self.path = path      # the including file, relative to the root
        self.line = line      # its line number
        self.angle = angle    # <...> rather than "..."
        self.name = name      # as written
        self.target = target  # the included file relative to the root, or None


def resolve(root, path, name, angle):
    """The tree's file that `#include name` in `path` reaches, or None (system, generated)."""
    if angle:
        return None
    # The compiler looks beside the including file first, then in src/ (-I src).
    for base in (os.path.dirname(path), "src"):
        candidate = os.path.normpath(os.path.join(base, name))
        if os.path.isfile(os.path.join(root, candidate)):
            return candidate
    return None


def includes_of(root, path):
    found = []
    for number, text in enumerate(read_lines(root, path), start=1):
        m = INCLUDE_RE.match(text)
        if m:
            angle = m.group(1) == "<"
            name = m.group(2).strip()
            found.append(Include(path, number, angle, name, resolve(root, path, name, angle)))
    return found


def module_of(path):
    """(folder under src/, basename) of a file of src/: "src/broker/conn.c" -> ("broker", "conn")."""
    rel = os.path.relpath(path, "src")
    folder = os.path.dirname(rel)
    base = os.path.splitext(os.path.basename(rel))[0]
    # handlers.h is implemented by the handle_*.c files: one module, or a cycle through
    # the dispatcher (client.c -> handlers.h, handle_connect.c -> ...) would go unseen.
    if folder == "broker" and base.startswith("handle_"):
        base = "handlers"
    return folder, base


def module_graph(root):
    """{(folder, module): {(folder, module) it includes}} over src/, self-includes left out."""
    graph = {}
    for path in source_files(root, "src"):
        node = module_of(path)
        edges = graph.setdefault(node, set())
        for inc in includes_of(root, path):
            if inc.target and inc.target.startswith("src" + os.sep):
                other = module_of(inc.target)
                if other != node:
                    edges.add(other)
    return graph


# ---------------------------------------------------------------- cycles

def strongly_connected(nodes, edges):
    """Tarjan's components of the graph, as lists; iterative, so any depth is safe."""
    index, low, on_stack, stack, result = {}, {}, set(), [], []
    counter = 0
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in nodes:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(sorted(component))
    return result


def cycle_in(component, edges):
    """One cycle through the first node of a strongly connected component, as a node list."""
    members = set(component)
    start = component[0]
    # Breadth-first from start's successors back to start gives a shortest cycle.
    previous = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges.get(node, ())):
                if child not in members or child in previous:
                    continue
                previous[child] = node
                if child == start:
                    path = [start]
                    node_back = node
                    while node_back != start:
                        path.append(node_back)
                        node_back = previous[node_back]
                    path.append(start)
                    return list(reversed(path))
                following.append(child)
        frontier = following
    return [start]


def folder_graph(graph, folder):
    """The modules of one folder and their includes within it."""
    nodes = {name for (f, name) in graph if f == folder}
    edges = {name: {n for (f, n) in graph[(folder, name)] if f == folder} for name in nodes}
    return nodes, edges


def check_cycles(graph, folder):
    nodes, edges = folder_graph(graph, folder)
    notes = ["module graph of src/%s:" % folder]
    for name in sorted(nodes):
        targets = sorted(edges[name])
        notes.append("%s -> %s" % (name, ", ".join(targets)) if targets else name)
    cycles = [c for c in strongly_connected(nodes, edges) if len(c) > 1]
    for component in cycles:
        notes.append("modules in a cycle: " + ", ".join(component))
        notes.append("cycle: " + " -> ".join(cycle_in(component, edges)))
    return not cycles, notes


# ---------------------------------------------------------------- forbidden includes

def forbidden_includes(root, top, is_forbidden):
    """Notes "path:line: #include name" for every include of root/top that is_forbidden()."""
    notes = []
    for path in source_files(root, top):
        for inc in includes_of(root, path):
            if is_forbidden(inc):
                mark = "<%s>" if inc.angle else '"%s"'
                notes.append("%s:%d: #include %s" % (path, inc.line, mark % inc.name))
    return notes


def broker_forbidden(inc):
    return inc.name.startswith("openssl/") or inc.name == "sqlite3.h"


def store_forbidden(inc):
    target = inc.target or ""
    return (target.startswith(os.path.join("src", "broker") + os.sep)
            or target == os.path.join("src", "util", "config.h")
            or inc.name.startswith("broker/") or inc.name == "util/config.h")


# ---------------------------------------------------------------- function length

def function_name(lines, brace):
    """The name in the definition whose body opens at lines[brace], or None when not one."""
    signature = []
    i = brace - 1
    while i >= 0:
        text = lines[i]
        stripped = text.strip()
        if (not stripped or stripped.startswith("#") or stripped.endswith((";", "}", "*/"))
                or stripped.startswith(("/*", "//", "*"))):
            break
        signature.insert(0, stripped)
        i -= 1
    joined = " ".join(signature)
    # A body follows a parameter list (and maybe attributes); an initializer follows '='.
    if "(" not in joined or not joined.rstrip().endswith(")"):
        return None
    for m in re.finditer(r"([A-Za-z_]\w*)\s*\(", joined):
        if m.group(1) not in NOT_A_NAME:
            return m.group(1)
    return None


def function_lengths(root):
    """[(lines, "path:name")] for every function definition of src/.

    The measure: a definition's body opens with a '{' alone at column 0 (the
    Linux brace style of .clang-format puts every function's brace there,
    and only a function's) and ends at the next '}' at column 0; its length
    is the number of lines from that '{' to that '}', both included. So
    "int f(void)\\n{\\n    return 0;\\n}" is 3 lines long. The signature
    and the comment above do not count.
    """
    found = []
    for path in source_files(root, "src"):
        lines = read_lines(root, path)
        for number, text in enumerate(lines):
            if not text.startswith("{"):
                continue
            name = function_name(lines, number)
            if name is None:
                continue
            end = number + 1
            while end < len(lines) and not lines[end].startswith("}"):
                end += 1
            found.append((end - number + 1, "%s:%s" % (path, name)))
    return found


def check_function_lengths(root):
    lengths = sorted(function_lengths(root), key=lambda item: (-item[0], item[1]))
    too_long = [item for item in lengths if item[0] > MAX_FUNCTION_LINES]
    notes = ["%d function definitions; the longest (lines from '{' to '}'):" % len(lengths)]
    notes += ["%d %s" % item for item in lengths[:LONGEST_SHOWN]]
    if len(too_long) > LONGEST_SHOWN:
        notes.append("and over %d lines as well:" % MAX_FUNCTION_LINES)
        notes += ["%d %s" % item for item in too_long[LONGEST_SHOWN:]]
    if too_long:
        notes.append("longer than %d lines: %d" % (MAX_FUNCTION_LINES, len(too_long)))
    return not too_long, notes


# ---------------------------------------------------------------- clang-format

def check_format(root):
    """(passed, notes), or (None, reason) when clang-format is missing."""
    tool = shutil.which("clang-format")
    if not tool:
        return None, "clang-format not installed"
    files = source_files(root, "src") + source_files(root, "tests")
    run = subprocess.run([tool, "--dry-run", "--Werror"] + files, cwd=root,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True)
    version = subprocess.run([tool, "--version"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, universal_newlines=True)
    notes = [version.stdout.strip()]
    per_file = {}
    for text in run.stderr.splitlines():
        m = re.match(r"^(.+?):\d+:\d+: (?:error|warning): code should be clang-formatted", text)
        if m:
            per_file[m.group(1)] = per_file.get(m.group(1), 0) + 1
    for path in sorted(per_file):
        notes.append("%s: %d to change" % (path, per_file[path]))
    if run.returncode != 0 and not per_file:
        notes += run.stderr.splitlines()[:20]
    if per_file:
        notes.append("files clang-format would change: %d of %d" % (len(per_file), len(files)))
    return run.returncode == 0, notes


# ---------------------------------------------------------------- output

class Tap:
    def __init__(self, planned):
        self.number = 0
        self.failed = 0
        print("1..%d" % planned)

    def result(self, passed, description, notes=(), skip=None):
        self.number += 1
        if skip is not None:
            print("ok %d - %s # SKIP %s" % (self.number, description, skip))
            return
        if not passed:
            self.failed += 1
        print("%s %d - %s" % ("ok" if passed else "not ok", self.number, description))
        for note in notes:
            print("# " + note)
        sys.stdout.flush()


def run_checks(root):
    graph = module_graph(root)
    folders = [d for d in CYCLE_FREE_DIRS if os.path.isdir(os.path.join(root, "src", d))]
    tap = Tap(len(folders) + 4)

    for folder in folders:
        passed, notes = check_cycles(graph, folder)
        tap.result(passed, "no include cycle between the modules of src/%s" % folder, notes)

    notes = forbidden_includes(root, os.path.join("src", "broker"), broker_forbidden)
    tap.result(not notes, "src/broker includes no <openssl/...> and no <sqlite3.h>", notes)

    notes = forbidden_includes(root, os.path.join("src", "store"), store_forbidden)
    tap.result(not notes, "src/store includes nothing from broker/ and not util/config.h",
               notes)

    passed, notes = check_function_lengths(root)
    tap.result(passed, "no function in src/ longer than %d lines" % MAX_FUNCTION_LINES, notes)

    passed, notes = check_format(root)
    description = "clang-format --dry-run --Werror finds src/ and tests/ formatted"
    if passed is None:
        tap.result(True, description, skip=notes)
    else:
        tap.result(passed, description, notes)
    return 1 if tap.failed else 0


def label(node):
    folder, name = node
    return "%s/%s" % (folder, name) if folder else name


def print_graph(root):
    """The include graph of src/ for people: per folder, across folders, between folders."""
    graph = module_graph(root)
    folders = sorted({folder for (folder, _) in graph})
    for folder in folders:
        nodes, edges = folder_graph(graph, folder)
        count = "%d module%s" % (len(nodes), "" if len(nodes) == 1 else "s")
        print("src/%s (%s)" % (folder, count) if folder else "src (%s)" % count)
        for name in sorted(nodes):
            targets = sorted(edges[name])
            print("    %s -> %s" % (name, ", ".join(targets)) if targets else "    " + name)
        for component in strongly_connected(nodes, edges):
            if len(component) > 1:
                print("    cycle: " + " -> ".join(cycle_in(component, edges)))
        print()

    print("across folders (module -> modules of other folders)")
    between = {}
    for node in sorted(graph):
        outside = sorted(t for t in graph[node] if t[0] != node[0])
        if outside:
            print("    %s -> %s" % (label(node), ", ".join(label(t) for t in outside)))
        for target in outside:
            between.setdefault(node[0] or "src", set()).add(target[0] or "src")
    print()

    print("between folders")
    for folder in sorted(between):
        print("    %s -> %s" % (folder, ", ".join(sorted(between[folder]))))
    for component in strongly_connected(set(between), between):
        if len(component) > 1:
            print("    cycle: " + " -> ".join(cycle_in(component, between)))
    return 0


def main():
    default_root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "..", ".."))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", nargs="?", default=default_root,
                        help="the source tree (default: %(default)s)")
    parser.add_argument("--graph", action="store_true",
                        help="print the include graph of src/ instead of checking")
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.root, "src")):
        print("Bail out! no src/ in %s" % args.root)
        return 2
    return print_graph(args.root) if args.graph else run_checks(args.root)


if __name__ == "__main__":
    sys.exit(main())
