from .sft import main

main()
