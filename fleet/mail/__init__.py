"""Outgoing e-mail: messages queued in `mail_outbox`, delivered by a sender task over SMTP."""
