"""The client side of the Ibanera Customer API, in rooms that each have one reason to change.

errors     every failure as a class, with its metric reason
counters   request, retry and login counters
envelope   the common response envelope and one page of a listing, read strictly
transport  one HTTP request, its size cap, and the retries of transient failures
codes      one-time codes: which TOTP step, on the server's clock
session    the token, the logins, and the refusals that stop them
pages      walking a paginated listing, every page or nothing
client     IbaneraClient, which puts them together for a poller
"""
