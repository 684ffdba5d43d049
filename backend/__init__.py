"""Active-learning ML backend for Label Studio.

The data flow reads top-down: HTTP surface (`app`, `api`, `admin`, `auth`) -> stores (`store`) ->
jobs (`job`, `trigger`) -> training and evaluation (`training`, `estimator`) -> registry (`registry`) ->
serving (`serving`). `model` is the Label Studio-style facade (`predict(tasks, context)`,
`fit(event, data)`) that the HTTP layer and the jobs share.
"""

__version__ = "0.1.0"
