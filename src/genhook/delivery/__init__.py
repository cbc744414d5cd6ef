"""Callback delivery: URL checks, signing, the outbox sender."""
