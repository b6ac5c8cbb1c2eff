pytest_plugins = [
    "tests.integration.postgres",
    "tests.integration.http_receiver",
    "tests.integration.kafka",
    "tests.integration.smtp_server",
    "tests.integration.prefect_server",
]
