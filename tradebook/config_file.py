"""Reading a configuration file: strict YAML, one ConfigError naming the file for anything else.

:func:`read_yaml` refuses what is not a small UTF-8 YAML mapping (a directory, a device, a
file over 1 MB, binary or non-UTF-8 bytes, an empty file, a list or a scalar), nesting
deeper than any configuration, and a key written twice in one mapping (YAML would keep
the last silently); it names the file and, where there is one, the line. The mappings it
returns remember the line of each key (so a bad value can be pointed at), floats keep the
text typed (money is read exactly, and ``1.0e400`` is checked against its bound rather
than becoming ``inf``), and an integer too long for ``int()`` comes back as its text for
the field's range check to name.
"""

from __future__ import annotations

import functools
import stat
from pathlib import Path
from typing import Any

from tradebook.errors import ConfigError
from tradebook.redaction import looks_secret, redact

MAX_CONFIG_BYTES = 1_000_000  # a config file is a few KB; anything bigger is the wrong file
MAX_YAML_DEPTH = 32  # the deepest config key is 5 levels down; deeper nesting is the wrong file


def _show_key(key: Any) -> str:
    return redact(key) if looks_secret(key) else repr(key)


class _YamlProblem(Exception):
    """Raised inside the YAML loader; :func:`read_yaml` turns it into a ConfigError naming the file."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


class _LinedDict(dict):
    """A YAML mapping that remembers the line of each key, so an error can point at it."""

    lines: dict[Any, int]


class YamlBigInt(str):
    """A YAML integer with more digits than ``int()`` takes, kept as its text for the range check."""


class YamlFloat(float):
    """A YAML float that keeps the text typed: money is read exactly, and an overflow shows what was written."""

    text: str


@functools.cache
def _yaml_loader() -> type:
    import yaml  # only the loader needs it

    merge_tag = "tag:yaml.org,2002:merge"

    class Loader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate keys and runaway nesting, and records key lines."""

        _depth = 0

        def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
            self._depth += 1
            try:
                if self._depth > MAX_YAML_DEPTH:
                    line = self.peek_event().start_mark.line + 1
                    raise _YamlProblem(line, f"nested more than {MAX_YAML_DEPTH} levels deep; expected a "
                                             "configuration (its deepest key is 5 levels down)")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def _key_lines(self, node) -> list[tuple[Any, int]]:  # noqa: ANN001
            out = []
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != merge_tag:
                    out.append((self.construct_object(key_node), key_node.start_mark.line + 1))
            return out

        def construct_mapping(self, node, deep=False):  # noqa: ANN001
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key, line in self._key_lines(node):
                    if key in seen:
                        raise _YamlProblem(line, f"key {_show_key(key)} is written twice in one mapping, on line "
                                                 f"{seen[key]} and line {line}; expected each key once (YAML "
                                                 "would silently keep the last)")
                    seen[key] = line
            return super().construct_mapping(node, deep=deep)

        def construct_lined_map(self, node):  # noqa: ANN001
            data = _LinedDict()
            data.lines = {}
            yield data
            data.update(self.construct_mapping(node))
            data.lines = dict(self._key_lines(node))

        def construct_checked_int(self, node):  # noqa: ANN001
            try:
                return self.construct_yaml_int(node)
            except ValueError:  # more digits than Python converts: the field's range check names its bound
                return YamlBigInt(self.construct_scalar(node).replace("_", ""))

        def construct_text_float(self, node):  # noqa: ANN001
            value = YamlFloat(self.construct_yaml_float(node))
            value.text = self.construct_scalar(node).replace("_", "")
            return value

    Loader.add_constructor("tag:yaml.org,2002:map", Loader.construct_lined_map)
    Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_checked_int)
    Loader.add_constructor("tag:yaml.org,2002:float", Loader.construct_text_float)
    return Loader


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def read_yaml(path: Path) -> dict:
    """The mapping in the YAML file at ``path``; ConfigError naming the file (and line) for anything else."""
    import yaml  # only the loader needs it

    expected = "expected a YAML file (config/tradebook.example.yaml shows every key)"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; {expected}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read ({_one_line(exc.strerror or exc)}); {expected}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"config file {path} is a directory; {expected}")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end
        raise ConfigError(f"config file {path} is not a regular file; {expected}")
    too_big = f"config file {path} is larger than {MAX_CONFIG_BYTES:,} bytes; expected a configuration of a few KB"
    if info.st_size > MAX_CONFIG_BYTES:
        raise ConfigError(too_big)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read ({_one_line(exc.strerror or exc)}); {expected}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(too_big)
    if b"\x00" in data:
        raise ConfigError(f"config file {path} is binary (a NUL byte at offset {data.index(0)}); expected a YAML "
                          "text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError(f"config file {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                          "expected a YAML text file in UTF-8") from None
    if not text.strip():
        raise ConfigError(f"config file {path} is empty; expected a mapping of sections (risk, sizing, router, "
                          "session, venues); write {} in it to keep every default")
    try:
        parsed = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except _YamlProblem as exc:
        raise ConfigError(f"config file {path}, line {exc.line}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path}{where}: invalid YAML: {_one_line(problem)}") from None
    except RecursionError:  # a safety net: the loader stops nesting well before Python's limit
        raise ConfigError(f"config file {path}: nested too deeply; expected a configuration") from None
    if parsed is None:  # only comments: every default
        return {}
    if not isinstance(parsed, dict):
        kind = {"list": "a list", "str": "a string", "int": "a number", "float": "a number", "bool": "a boolean"}
        raise ConfigError(f"config file {path}: expected a mapping of sections (risk, sizing, router, session, "
                          f"venues) at the top, got {kind.get(type(parsed).__name__, type(parsed).__name__)}")
    return parsed
