from shared.migrations import run_env
from subgraphs.expense.models import Base

run_env(Base.metadata)
