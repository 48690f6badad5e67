"""MODE_ASYNC machinery: jobs that pause and resume, wait contexts, engines."""
