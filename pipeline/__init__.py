"""ittybit-pipeline: Ittybit webhooks in, one retried Celery task per listener out."""
