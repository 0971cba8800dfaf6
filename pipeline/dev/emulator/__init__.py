"""A local Ittybit: the jobs API, signed webhook deliveries, and switches to make it misbehave.

Run it with `pipeline emulator` and point the pipeline at it (`ITTYBIT_API_URL`).

API (Bearer key required; errors as `{"kind": ..., "message": ...}`):
  POST /jobs        create a job (201); the same `Idempotency-Key` replays the first answer
                    (with `Idempotent-Replayed: true`); reused with another body: 409
  GET  /jobs/<id>   the job; statuses queued → processing → succeeded | failed
  GET  /files/<name>  placeholder bytes for an output URL

A job reports to its `webhook_url` when it ends (and at `processing` if asked), signed with
`Ittybit-Signature` (hex HMAC-SHA256 of the raw body). Network errors, timeouts (5 s) and
5xx answers are retried with exponential backoff; a 4xx is final.

Per job, `options.emulator` (echoed back like any option):
  fail: "reason"          the job ends `failed` with this error
  delivery_failures: N    the first N delivery attempts fail as if the network were down
  shape: "A"|"B"|"C"      payload shape of its webhooks (default: --shape)
  delay: seconds          time from queued to the end (default: --delay)
  processing_webhook: true  also deliver the `processing` status
  deliver: false          its final webhook is never sent (logged as "lost")

Control endpoints for tests (no auth):
  POST /_emulator/faults   {"status": 500|429|400|..., "count": K, "retry_after": s,
                            "hang": s, "method": "POST", "path": "/jobs", "apply": false}
                           the next K matching API calls answer that error (429 carries
                           Retry-After), after hanging `hang` seconds if given; with
                           "apply": true the call is carried out first and only its answer
                           is replaced (a lost response). Only "hang": a slow, normal answer.
                           {"fail_jobs": K, "error": "reason"}  the next K jobs created fail
                           {"delivery_failures": N}  the next N delivery attempts fail
                           {"lost_deliveries": N}  the next N jobs to end send no webhook
  GET|DELETE /_emulator/faults   pending faults / clear them
  GET /_emulator/requests        every API call: method, path, headers, json, answer status
  GET /_emulator/deliveries      every delivery attempt (?job_id= filters)
  GET /_emulator/jobs            every job
  POST /_emulator/reset          forget everything
"""

from pipeline.dev.emulator.app import create_app, emulator_of
from pipeline.dev.emulator.jobs import EmulatorConfig

__all__ = ["EmulatorConfig", "create_app", "emulator_of"]
