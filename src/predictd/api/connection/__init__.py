"""The HTTP connection under the app: the uvicorn protocol ``serve`` runs (``protocol``), the bounds on a
request's head (``head``), the caps on open connections (``guard``), and the answer the connection gives
by itself when one is crossed (``refusals``)."""
