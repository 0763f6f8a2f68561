"""SIP2, the protocol of self-check machines and automated returns (`shelfmark sip2`).

`protocol` is the wire format, `answers` SIP2's codes and negative answers, `dispatch` one
conversation, `circulation` and `patrons` the messages (thin: they call the services as
the logged-in staff user), `server` the asyncio TCP server.
"""
