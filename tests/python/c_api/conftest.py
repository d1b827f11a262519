import pytest
from redis_servers import RedisServer


@pytest.fixture
def redis_server():
    s = RedisServer()
    yield s
    s.stop()
