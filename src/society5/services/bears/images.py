"""(being built)"""

from society5.core.service import Job

JOBS: tuple[Job, ...] = ()
