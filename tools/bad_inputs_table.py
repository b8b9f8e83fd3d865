#!/usr/bin/env python
"""The README's "Bad inputs" table, generated from the tests that cover each input.

A test covers a bad input when its docstring ends with a paragraph (a line starting)
`Bad input: <the input> | <what happens>`. The table lists them by test file, with the test
that shows it; `tests/test_bad_inputs.py` fails when the README's table is not this one.

    python tools/bad_inputs_table.py            # print the table
    python tools/bad_inputs_table.py --write    # put it into README.md
"""
import argparse
import ast
import glob
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- bad-inputs-table: tools/bad_inputs_table.py -->", "<!-- /bad-inputs-table -->"


def covered_bad_inputs(tests_folder=os.path.join(REPO, "tests")):
    """[(input, what happens, "file::test")] of every test tagged `Bad input:`."""
    rows = []
    for path in sorted(glob.glob(os.path.join(tests_folder, "test_*.py"))):
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            doc = ast.get_docstring(node) if isinstance(node, ast.FunctionDef) else None
            match = re.search(r"^Bad input: (.*)", doc or "", re.M | re.S)
            if match:
                what, outcome = " ".join(match.group(1).split()).split(" | ", 1)
                rows.append((what, outcome, f"{os.path.basename(path)}::{node.name}"))
    return rows


def table(rows):
    lines = ["| bad input | what happens | test |", "|---|---|---|"]
    lines += [f"| {what} | {outcome} | `{test}` |" for what, outcome, test in rows]
    return "\n".join(lines)


def _block(readme_text):
    return re.search(re.escape(BEGIN) + r"\n(.*?)" + re.escape(END), readme_text, re.S)


def readme_block(readme_text):
    """The table between the README's markers, or None."""
    match = _block(readme_text)
    return match.group(1).rstrip("\n") if match else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the README's table")
    args = parser.parse_args()
    text = table(covered_bad_inputs())
    if not args.write:
        print(text)
        return
    readme = os.path.join(REPO, "README.md")
    with open(readme) as f:
        content = f.read()
    match = _block(content)
    if match is None:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block to replace")
    content = content[:match.start(1)] + text + "\n" + content[match.end(1):]
    with open(readme + ".tmp", "w") as f:
        f.write(content)
    os.replace(readme + ".tmp", readme)


if __name__ == "__main__":
    main()
