import sys

from cloud_trainer.cli import main

sys.exit(main())
