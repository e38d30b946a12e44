"""When runs start: schedules (cron slots) and the scheduler that starts due runs."""
