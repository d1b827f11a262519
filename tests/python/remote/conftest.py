import pytest
from redis_servers import RedisCluster, RedisServer


@pytest.fixture
def redis_server():
    s = RedisServer()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def redis_cluster():
    c = RedisCluster()
    yield c
    c.stop()
