"""SAT's side of the platform, framework-free: the CFDI 4.0 engine (`sat.cfdi`: building, sealing,
SAT's rules and catalogs, parsing and verifying received CFDIs) and the clients of SAT's and the
PACs' services (`sat.pac`: stamping, cancellation, the CFDI status query).

It lives outside `subgraphs/` because two services use it: invoice issues CFDIs, expense imports
and verifies suppliers' CFDIs and asks SAT for their status. It knows nothing of GraphQL, the
database or any service's settings."""
