.PHONY: run test test-fast bench

run:        ## run the backend on :9090 (embedded mode: no Redis needed)
	bin/run

test:       ## every test, including the real Label Studio end-to-end tests
	bin/test

test-fast:  ## unit and HTTP tests only
	SKIP_LABEL_STUDIO=1 bin/test -m "not labelstudio and not slow"

bench:      ## /predict latency and throughput against a running backend (BACKEND_URL)
	.venv/bin/python bench/predict.py --url $${BACKEND_URL:-http://127.0.0.1:9090}
