"""atheris target: the config loader (YAML file, environment, overrides).

Any input either loads or raises ConfigError naming what is wrong; nothing
else may escape (a TypeError, an OverflowError, a YAML parser crash, a hang).

    python3 tests/fuzz/fuzz_config.py -max_total_time=60 CORPUS_DIR tests/fuzz/corpus/config
"""

import os
import sys
import tempfile

import atheris
from fuzz_common import with_scratch_corpus

with atheris.instrument_imports():
    from lmcache.config import Config
    from lmcache.errors import ConfigError

_KEYS = Config.keys()
_PATH = os.path.join(tempfile.mkdtemp(prefix="lmcache-fuzz-config-"), "config.yaml")


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    yaml_text = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 512))
    env = {}
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        key = _KEYS[fdp.ConsumeIntInRange(0, len(_KEYS) - 1)] if fdp.ConsumeBool() else fdp.ConsumeUnicodeNoSurrogates(8)
        env["LMCACHE_" + key.upper()] = fdp.ConsumeUnicodeNoSurrogates(24)
    overrides = {}
    if fdp.ConsumeBool():
        key = _KEYS[fdp.ConsumeIntInRange(0, len(_KEYS) - 1)]
        kind = fdp.ConsumeIntInRange(0, 4)
        overrides[key] = [fdp.ConsumeInt(8), fdp.ConsumeRegularFloat(), fdp.ConsumeFloat(),
                          fdp.ConsumeUnicodeNoSurrogates(16), fdp.ConsumeBool()][kind]
    with open(_PATH, "w", encoding="utf-8") as f:
        f.write(yaml_text)
    try:
        Config.load(_PATH if yaml_text else None, env=env, overrides=overrides)
    except ConfigError:
        pass


if __name__ == "__main__":
    atheris.Setup(with_scratch_corpus(sys.argv, "config"), one_input)
    atheris.Fuzz()
