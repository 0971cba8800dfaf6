"""Celery settings, loaded with `config_from_object("celeryconfig")`.

Flower lists this module's public names through its API, so helpers here are _private.
Values that depend on the deployment come from the environment via pipeline.settings.
"""

from pipeline.settings import Settings as _Settings

_settings = _Settings.from_env()

broker_url = _settings.broker_url
broker_transport_options = _settings.broker_transport_options()
broker_connection_retry_on_startup = True
broker_connection_max_retries = None  # a worker started before Redis waits for it
broker_connection_timeout = 2.0
# Publishing happens after the webhook's commit: fail fast, the relay publishes later.
task_publish_retry_policy = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
task_ignore_result = True
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# Below the broker's visibility timeout and the run lease (checked at worker start).
task_time_limit = _settings.task_time_limit
task_soft_time_limit = _settings.task_time_limit * 0.9
worker_cancel_long_running_tasks_on_connection_loss = True
# Task events cost a worker ~1 ms of CPU per task (17% of its CPU end to end, bench/).
# Flower switches them on in every worker itself while it runs (its enable_events
# option, every 5 s), so nobody pays for them while nobody watches. Set
# CELERY_TASK_EVENTS=1 for another monitor that does not (celery-exporter, `celery events`).
worker_send_task_events = _settings.task_events
task_send_sent_event = _settings.task_events
worker_hijack_root_logger = False
timezone = "UTC"
enable_utc = True
