from bibad_utils.publish.pagecheck import *  # noqa: F401,F403  (moved to bibad_utils.publish.pagecheck)
from bibad_utils.publish.pagecheck import main as _main

if __name__ == "__main__":
    raise SystemExit(_main())
