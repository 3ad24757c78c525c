from trainer.mae.train import main

main()
