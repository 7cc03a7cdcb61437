import sys

from agentir.cli import main

sys.exit(main())
