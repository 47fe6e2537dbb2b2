"""The hooks app: users attach actions (a job, a request, a webhook) to hook events (docs/hooks-app.md)."""
