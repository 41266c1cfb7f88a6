"""The trunk service's wire contract: `trunk.proto`, the modules `make proto` generates from it,
and the one status detail both sides match on."""

#: How NOT_FOUND details start when a session is gone (expired, closed, server restarted).
SESSION_LOST = "session lost"
