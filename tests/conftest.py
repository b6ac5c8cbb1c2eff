pytest_plugins = ["tests.integration.postgres"]
