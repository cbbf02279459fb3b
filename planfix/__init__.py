"""Everything that speaks Planfix: the REST client, the account-wide limiter, the emulator."""
