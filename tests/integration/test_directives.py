#!/usr/bin/python3
"""The documents agree with aviaryd's table of directives (issue 15, point 16).

`aviaryd --dump-directives` prints the one table that the parser and -h read:
name, kind, placeholder, range, suffixes, whether it is also a plan and instance
limit, and the default. Each test holds one document to it, directive by
directive, so that a directive added to the table (or a range or a default
changed) fails here until -h, aviaryd(8), aviary.conf(5), etc/aviary.conf and
aviaryctl(1) say the same. Nothing here lists directives by hand.
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aviary_test import (  # noqa: E402
    TestFailure, aviaryctl_path, aviaryd_path, check, check_equal, run, run_tests, source_dir)

SUFFIX = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
NUMBER = r"(\d+[kKmMgG]?)"


def _number(text):
    """'64k' -> 65536, '1024' -> 1024."""
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", text)
    if not m:
        return None
    return int(m.group(1)) * SUFFIX[m.group(2).lower()]


class Directive:
    def __init__(self, fields):
        (self.name, self.kind, self.arg, lo, hi, suffixes, limit, self.default) = fields
        self.min = int(lo) if lo != "-" else None
        self.max = int(hi) if hi != "-" else None
        self.suffixes = suffixes == "yes"
        self.limit = limit == "yes"

    def __repr__(self):
        return self.name

    def default_matches(self, written):
        """Does `written` (as a document shows it) say this directive's default?"""
        if self.kind == "number":
            return _number(written) == _number(self.default)
        return written == self.default

    @property
    def has_plain_default(self):
        """A default that does not depend on the mode (listen, db) and is not 'none'."""
        return self.kind in ("number", "choice", "bool")


_table = None


def table():
    global _table
    if _table is None:
        r = run([aviaryd_path(), "--dump-directives"], timeout=10)
        check_equal(r.returncode, 0, "exit status of aviaryd --dump-directives")
        rows = [line.split("\t") for line in r.stdout.decode().splitlines()
                if line and not line.startswith("#")]
        for row in rows:
            check_equal(len(row), 8, "fields of the dump line %r" % row)
        _table = [Directive(row) for row in rows]
        check(len(_table) > 20, "the dump has only %d directives" % len(_table))
    return _table


def _read(*path):
    with open(os.path.join(source_dir(), *path), encoding="utf-8") as f:
        return f.read()


def _roff_text(lines):
    """Plain text of man page lines: macros dropped, fonts and escapes undone."""
    out = []
    for line in lines:
        if line.startswith("."):
            parts = line.split(None, 1)
            if len(parts) < 2 or parts[0] in (".TP", ".PP", ".br", ".RS", ".RE", ".nf", ".fi"):
                continue
            line = parts[1].replace('"', "")
        out.append(line)
    text = " ".join(out)
    text = re.sub(r"\\f[BIRP]", "", text)
    return (text.replace("\\-", "-").replace("\\(dq", '"').replace("\\(aq", "'")
            .replace("\\%", "").replace("\\ ", " "))


def _roff_name(name):
    return name.replace("-", "\\-")


def _ranges(text, sep):
    """Every MIN SEP MAX pair in `text`, as numbers."""
    return {(_number(a), _number(b)) for a, b in re.findall(NUMBER + sep + NUMBER, text)}


def _failures(problems):
    if problems:
        raise TestFailure("%d mismatches with the table of directives:\n  %s"
                          % (len(problems), "\n  ".join(problems)))


# ---- -h ---------------------------------------------------------------------

def test_help_lists_every_directive_with_range_and_default():
    r = run([aviaryd_path(), "-h"], timeout=10)
    text = r.stdout.decode()
    problems = []
    for d in table():
        m = re.search(r"^  --%s %s\b(.*?)(?=^  -|\Z)" % (re.escape(d.name), re.escape(d.arg)),
                      text, re.M | re.S)
        if not m:
            problems.append("-h lacks --%s %s" % (d.name, d.arg))
            continue
        entry = " ".join(m.group(1).split())
        if d.kind == "number" and "(%d..%d" % (d.min, d.max) not in entry:
            problems.append("-h: --%s does not give its range %d..%d" % (d.name, d.min, d.max))
        if d.kind == "number" and ("suffixes" in entry) != d.suffixes:
            problems.append("-h: --%s %s suffixes" % (d.name, "lacks" if d.suffixes else "has"))
        if d.has_plain_default and "default: %s)" % d.default not in entry:
            problems.append("-h: --%s does not give its default %s" % (d.name, d.default))
    _failures(problems)


# ---- aviaryd(8) -------------------------------------------------------------

def test_aviaryd_8_lists_every_long_option():
    page = _read("man", "aviaryd.8")
    m = re.search(r"^\.SH OPTIONS\n(.*?)^\.SH ", page, re.M | re.S)
    check(m, "aviaryd(8) has no OPTIONS section")
    options = m.group(1)
    missing = [d.name for d in table()
               if not re.search(r"\\-\\-%s\b(?!\\-)" % re.escape(_roff_name(d.name)), options)]
    check(not missing, "OPTIONS of aviaryd(8) lacks --%s" % ", --".join(missing))


# ---- aviary.conf(5) ---------------------------------------------------------

def _conf5_entries():
    """{name: plain text of its entry} for the .TP entries under DIRECTIVES."""
    page = _read("man", "aviary.conf.5")
    m = re.search(r"^\.SH DIRECTIVES\n(.*?)^\.SH ", page, re.M | re.S)
    check(m, "aviary.conf(5) has no DIRECTIVES section")
    entries, name, body = {}, None, []
    for line in m.group(1).splitlines() + [".TP"]:
        if line.startswith((".TP", ".SS")):
            if name:
                entries[name] = _roff_text(body)
            name, body = None, []
            continue
        if name is None and body == [] and line.startswith(".BI "):
            name = line.split()[1].replace("\\-", "-")
            continue
        body.append(line)
    return entries


def test_aviary_conf_5_documents_every_directive():
    entries = _conf5_entries()
    known = {d.name for d in table()}
    problems = ["aviary.conf(5) documents %s, which aviaryd does not know" % n
                for n in entries if n not in known]
    for d in table():
        text = entries.get(d.name)
        if text is None:
            problems.append("aviary.conf(5) has no entry for %s" % d.name)
            continue
        if d.kind == "number" and (d.min, d.max) not in _ranges(text, r" to "):
            problems.append("aviary.conf(5): %s does not say '%d to %d'" % (d.name, d.min, d.max))
        if d.kind == "number" and ("suffix" in text) != d.suffixes:
            problems.append("aviary.conf(5): %s %s suffixes" % (
                d.name, "does not mention its" if d.suffixes else "mentions"))
        if d.has_plain_default:
            m = re.search(r"Default: (\S+?)[.,;]?(?:\s|$)", text)
            if not m or not d.default_matches(m.group(1)):
                problems.append("aviary.conf(5): %s says 'Default: %s', the table %s"
                                % (d.name, m.group(1) if m else "(none)", d.default))
    _failures(problems)


def test_aviary_conf_5_says_which_directives_take_suffixes():
    """The SYNTAX section once said only max-payload takes a suffix."""
    page = _roff_text(_read("man", "aviary.conf.5").splitlines())
    m = re.search(r"Only (\S+) also takes a suffix", page)
    check(not m, "aviary.conf(5) says only %s takes a suffix" % (m.group(1) if m else ""))


# ---- etc/aviary.conf --------------------------------------------------------

DIRECTIVE_LINE = re.compile(r"^(#?)([a-z][a-z0-9-]*)(?:[ \t]+(.*))?$")


def _sample():
    """{name: (commented, value, the comment block above it)} of etc/aviary.conf."""
    lines = _read("etc", "aviary.conf").splitlines()
    known = {d.name for d in table()}
    found, unknown = {}, []
    for i, line in enumerate(lines):
        m = DIRECTIVE_LINE.match(line)
        if not m:
            continue
        if m.group(2) not in known:
            unknown.append(line)
            continue
        # the comment above, past the other directives of its group (keepalive-min/-max)
        j, block = i - 1, []
        while j >= 0 and (lines[j].startswith("# ") or lines[j] == "#"
                          or (DIRECTIVE_LINE.match(lines[j]) and not block)):
            if lines[j].startswith("#") and not DIRECTIVE_LINE.match(lines[j]):
                block.insert(0, lines[j][1:])
            j -= 1
        value = (m.group(3) or "").strip().strip('"')
        found.setdefault(m.group(2), (m.group(1) == "#", value, " ".join(block)))
    return found, unknown


def test_sample_configuration_shows_every_directive():
    found, unknown = _sample()
    problems = ["etc/aviary.conf sets %r, which aviaryd does not know" % l for l in unknown]
    for d in table():
        if d.name not in found:
            problems.append("etc/aviary.conf lacks %s" % d.name)
            continue
        commented, value, block = found[d.name]
        if d.kind == "number" and (d.min, d.max) not in _ranges(block, r"\.\."):
            problems.append("etc/aviary.conf: the comment of %s does not say (%d..%d)"
                            % (d.name, d.min, d.max))
        if d.kind == "number" and ("suffix" in block) != d.suffixes:
            problems.append("etc/aviary.conf: the comment of %s %s suffixes" % (
                d.name, "does not mention its" if d.suffixes else "mentions"))
        # "The commented-out values are the defaults."
        if commented and d.has_plain_default and not d.default_matches(value):
            problems.append("etc/aviary.conf: #%s %s, but the default is %s"
                            % (d.name, value, d.default))
    _failures(problems)


# ---- aviaryctl(1) -----------------------------------------------------------

def test_aviaryctl_1_lists_every_limit():
    page = _read("man", "aviaryctl.1")
    m = re.search(r"is one of the limit directives of(.*?)^\.I value", page, re.M | re.S)
    check(m, "aviaryctl(1) has no list of limits ('is one of the limit directives of')")
    listed = set(re.findall(r"[a-z][a-z0-9-]+", m.group(1).replace("\\-", "-")))
    limits = [d.name for d in table() if d.limit]
    missing = [n for n in limits if n not in listed]
    check(not missing, "aviaryctl(1)'s list of limits lacks %s" % ", ".join(missing))
    others = [d.name for d in table() if not d.limit and d.name in listed]
    check(not others, "aviaryctl(1) lists %s as limits" % ", ".join(others))


def test_aviaryctl_help_lists_every_limit():
    r = run([aviaryctl_path(), "--help"], timeout=10)
    text = (r.stdout + r.stderr).decode()
    m = re.search(r"^Limits.*?\n((?:  .*\n)+)", text, re.M)
    check(m, "aviaryctl --help has no Limits list:\n%s" % text)
    listed = set(m.group(1).split())
    missing = [d.name for d in table() if d.limit and d.name not in listed]
    check(not missing, "aviaryctl --help's limits lack %s" % ", ".join(missing))


if __name__ == "__main__":
    run_tests(globals())
