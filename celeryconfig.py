"""Celery's static settings, loaded with `config_from_object("celeryconfig")`.

What depends on the deployment (broker URL and its options, time limits, task events)
comes from the environment through pipeline.settings, applied by
`pipeline.runtime.create_celery`. Flower lists this module's public names through its API,
so helpers here would be _private.
"""

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
worker_cancel_long_running_tasks_on_connection_loss = True
# Task events stay off until a monitor turns them on (Flower does, every few seconds),
# so nobody pays their CPU while nobody watches; CELERY_TASK_EVENTS=1 forces them.
worker_send_task_events = False
task_send_sent_event = False
worker_hijack_root_logger = False
timezone = "UTC"
enable_utc = True
