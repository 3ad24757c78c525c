from trainer.lit.train import main

main()
