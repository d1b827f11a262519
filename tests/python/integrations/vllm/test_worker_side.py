"""The worker side of the vLLM connector driven step by step, on a real
VllmConfig and vLLM-shaped CPU KV tensors: layer-wise loads that vLLM waits
for layer by layer, and the fallback when it never waits."""

import tempfile

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is installed by scripts/setup.sh")

from lmcache.config import Config  # noqa: E402
from lmcache.integrations.vllm.metadata import LMCacheConnectorMetadata, RequestWork  # noqa: E402
from lmcache.integrations.vllm.worker_side import WorkerSide  # noqa: E402

LAYERS = [f"model.layers.{i}.self_attn.attn" for i in range(2)]
TOKENS = list(range(1, 513))  # two chunks of 256


@pytest.fixture(scope="module")
def vllm_config():
    from vllm.config import KVTransferConfig
    from vllm.engine.arg_utils import EngineArgs

    from lmcache.demo.models import TINY_F32, make_llama

    model = make_llama(tempfile.mkdtemp(prefix="lmcache-worker-") + "/tiny", TINY_F32)
    args = EngineArgs(model=model, skip_tokenizer_init=True, enforce_eager=True, dtype="float32", max_model_len=2048,
                      kv_transfer_config=KVTransferConfig(
                          kv_connector="LMCacheConnector", kv_connector_module_path="lmcache.integrations.vllm",
                          kv_role="kv_both", engine_id="worker-side-test", kv_connector_extra_config={}))
    return args.create_engine_config()


@pytest.fixture
def worker(vllm_config):
    made = []

    def make(**config):
        w = WorkerSide(vllm_config, Config(chunk_size=256, l1_capacity_gb=0.05, **config))
        # vLLM's CPU attention cache: per layer (blocks, kv heads, block_size, 2 * head_size).
        caches = {name: torch.randn(16, 2, 128, 64) for name in LAYERS}
        w.register_kv_caches(caches)
        made.append(w)
        return w, [caches[n] for n in LAYERS]

    yield make
    for w in made:
        w.close()


def step(requests):
    return LMCacheConnectorMetadata(requests=requests)


def store_then_zero(w, caches):
    """Stores TOKENS from blocks 0-3, then zeroes blocks 4-7 for the loads below."""
    w.start_load_kv(step([]))
    w.wait_for_save(step([RequestWork("a", TOKENS, [0, 1, 2, 3], store_until=512)]))
    assert w.all_stats()["stored_chunks"] == 2
    for c in caches:
        c[4:8] = 0


def load_work():
    return RequestWork("b", TOKENS + [7], [4, 5, 6, 7, 8], load_until=512)


def test_layers_arrive_when_vllm_waits_for_them(worker):
    w, caches = worker(layerwise_load="on")
    store_then_zero(w, caches)
    meta = step([load_work()])
    w.start_load_kv(meta)
    assert not caches[0][4:8].any() and not caches[1][4:8].any()  # nothing before the first wait
    w.wait_for_layer_load(LAYERS[0])
    assert torch.equal(caches[0][4:8], caches[0][0:4]) and not caches[1][4:8].any()
    w.wait_for_layer_load(LAYERS[1])
    assert torch.equal(caches[1][4:8], caches[1][0:4])
    w.wait_for_save(meta)
    assert w.take_load_error_blocks() == set()
    assert w.stats["loaded_tokens"] == 512 and w.stats["layer_waits"] == 2


def test_a_layer_that_did_not_run_still_gets_its_kv(worker):
    w, caches = worker(layerwise_load="on")
    store_then_zero(w, caches)
    meta = step([load_work()])
    w.start_load_kv(meta)
    w.wait_for_layer_load(LAYERS[0])  # layer 1 did not run attention this step
    w.wait_for_save(meta)
    assert torch.equal(caches[1][4:8], caches[1][0:4])  # there for its next attention
    assert w.take_load_error_blocks() == set()


def test_a_step_without_any_wait_is_recomputed_and_later_steps_load_whole(worker):
    w, caches = worker(layerwise_load="on")
    store_then_zero(w, caches)
    meta = step([load_work()])
    w.start_load_kv(meta)
    w.wait_for_save(meta)  # vLLM never called wait_for_layer_load
    assert w.take_load_error_blocks() == {4, 5, 6, 7}
    assert w.stats["load_failed_tokens"] == 512
    for c in caches:
        c[4:8] = 0
    w.start_load_kv(meta)  # whole-step loads now: everything before the forward pass
    assert torch.equal(caches[0][4:8], caches[0][0:4]) and torch.equal(caches[1][4:8], caches[1][0:4])
    w.wait_for_save(meta)
    assert w.take_load_error_blocks() == set()
