"""Experiments and harnesses beside the product: the active-learning simulator and its data sets
(`python -m lab simulate`), and what benchmarks and tests use to run the backend as users do
(`processes`: redis-server, gunicorn and RQ workers on free ports; `client`: LS's side of the
protocol). Nothing in `backend` imports this package."""
