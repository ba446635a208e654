from shared.migrations import run_env
from subgraphs.invoice.models import Base

run_env(Base.metadata)
