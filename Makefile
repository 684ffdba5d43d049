.PHONY: run test test-fast bench

run:        ## run the backend on :9090 (embedded mode: no Redis needed)
	bin/run

test:       ## every test, including the real Label Studio end-to-end tests
	bin/test

test-fast:  ## unit and HTTP tests only
	SKIP_LABEL_STUDIO=1 bin/test -m "not labelstudio and not slow"

bench:      ## the benchmark table (bench/); with BACKEND_URL only its HTTP load, against that backend
	.venv/bin/python -m bench $${BACKEND_URL:+--url $$BACKEND_URL}
