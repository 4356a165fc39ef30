"""docs/DESIGN.md stays true: every module under jax_aug/ is named in its layout, and every signature it
writes as `jax_aug.<module>.<name>(<params>)` (or `<module>.<name>(...)` under a `### jax_aug.<package>`
heading) names a function that exists with those parameters."""

import importlib
import inspect
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DESIGN = REPO / "docs" / "DESIGN.md"
PACKAGE = REPO / "jax_aug"


def _layout_sections(text: str) -> dict[str, str]:
  """{"" (top-level modules) | "<package>": the layout lines describing it} from the ``` block under
  "## Layout". A package's section starts at a two-space-indented `<package>/` line."""
  block = text.split("## Layout", 1)[1].split("```", 2)[1]
  sections, current = {"": ""}, ""
  inside = False
  for line in block.splitlines():
    if line.startswith("jax_aug/"):
      inside = True
      continue
    if inside and line and not line.startswith(" "):
      break  # the next top-level folder (configs/, ...)
    if not inside:
      continue
    match = re.match(r"^  (\w+)/", line)
    if match:
      current = match.group(1)
      sections[current] = line
    elif re.match(r"^  \w+\.py", line):
      current = ""
      sections[""] += "\n" + line
    else:
      sections[current] += "\n" + line
  return sections


def _modules() -> list[Path]:
  return sorted(p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def _named(module: Path, sections: dict[str, str]) -> bool:
  if len(module.parts) == 1:
    return re.search(rf"(?<![\w/]){re.escape(module.name)}", sections[""]) is not None
  section = sections.get(module.parts[0], "")
  nested = [f"{part}/" for part in module.parts[1:-1]]  # a subpackage: its folder named in the section too
  return re.search(rf"(?<![\w.]){re.escape(module.name)}", section) is not None and all(
    folder in section for folder in nested
  )


def test_every_module_is_named_in_the_layout():
  sections = _layout_sections(DESIGN.read_text())
  missing = [str(Path("jax_aug") / m) for m in _modules() if not _named(m, sections)]
  assert not missing, f"docs/DESIGN.md's layout does not name: {missing}"


def test_layout_check_catches_a_missing_module():
  """Negative control: a layout without prompts.py (or without a package) fails the check."""
  sections = _layout_sections(DESIGN.read_text())
  assert _named(Path("data/prompts.py"), sections)
  broken = dict(sections, data=sections["data"].replace("prompts.py", "prompt_builders.py"))
  assert not _named(Path("data/prompts.py"), broken)
  assert not _named(Path("nonexistent/thing.py"), sections)
  assert not _named(Path("data/nested/prompts.py"), sections)


# `jax_aug.a.b(args)`, or `b.c(args)` / `c(args)` resolved under the current `### jax_aug.<x>` heading.
_CALL = re.compile(r"`((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*)\(([^`]*?)\)")


def _parameters(text: str) -> list[str]:
  """The parameter names of a documented signature: `path, data: bytes, *, source: str, max_bytes=...`."""
  depth, part, parts = 0, "", []
  for char in text:
    depth += char in "([{"
    depth -= char in ")]}"
    if char == "," and depth == 0:
      parts.append(part)
      part = ""
    else:
      part += char
  parts.append(part)
  names = []
  for piece in parts:
    match = re.match(r"\s*\*{0,2}([A-Za-z_]\w*)\s*(?:[:=]|$)", piece)
    if match and match.group(1) not in ("self", "cls"):
      names.append(match.group(1))
  return names


def _resolve(dotted: str, context: str):
  """The object `dotted` names, trying it as absolute, then under the heading's package `context`."""
  candidates = [dotted] if dotted.startswith("jax_aug.") else [f"{context}.{dotted}", dotted]
  for candidate in candidates:
    parts = candidate.split(".")
    for split in range(len(parts), 0, -1):
      try:
        obj = importlib.import_module(".".join(parts[:split]))
      except ImportError:
        continue
      try:
        for attribute in parts[split:]:
          obj = getattr(obj, attribute)
      except AttributeError:
        break
      return obj
  return None


def _documented_calls(text: str):
  """(heading package, dotted name, documented parameter names) for each signature under a jax_aug heading."""
  context = None
  for line in text.split("## Shared interfaces", 1)[1].splitlines():
    heading = re.match(r"^### (jax_aug(?:\.\w+)*)", line)
    if line.startswith("#"):
      context = heading.group(1) if heading else None
      continue
    if context is None:
      continue
    for dotted, args in _CALL.findall(line):
      yield context, dotted, _parameters(args)


def _signature_problems(text: str) -> list[str]:
  problems = []
  for context, dotted, names in _documented_calls(text):
    obj = _resolve(dotted, context)
    if obj is None:
      problems.append(f"{dotted} (under {context}) does not exist")
      continue
    if not callable(obj):
      continue
    try:
      signature = inspect.signature(obj)
    except (TypeError, ValueError):
      continue
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
      continue
    unknown = [n for n in names if n not in signature.parameters and n not in ("args", "kwargs", "options")]
    if unknown:
      problems.append(f"{dotted}: documented parameters {unknown} not in {signature}")
  return problems


def test_documented_signatures_exist():
  problems = _signature_problems(DESIGN.read_text())
  assert not problems, "docs/DESIGN.md is stale:\n" + "\n".join(problems)


def test_signature_check_catches_stale_entries():
  """Negative control: a renamed parameter and a removed function are both reported."""
  text = (
    "## Shared interfaces\n### jax_aug.io\n- `atomic_write_json(path, obj)`\n"
    "- `atomic_write_json(path, payload)`\n- `atomic_write_yaml(path, obj)`\n"
  )
  problems = _signature_problems(text)
  assert len(problems) == 2, problems
  assert "payload" in problems[0] and "atomic_write_yaml" in problems[1]
