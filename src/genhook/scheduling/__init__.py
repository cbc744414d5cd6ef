"""Schedules: templates that fire themselves on cron, durably, each due time exactly once."""
